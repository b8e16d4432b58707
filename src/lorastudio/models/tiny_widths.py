"""The built-in tiny models' widths (`models.tiny_layouts`, `models.tiny`, `models.tiny_kolors`), where
the real models' are 768 (CLIP ViT-L), 1024 (OpenCLIP ViT-H) and 2048 (SDXL's two encoders, Kolors' text
projection).

LoRA family detection (`adapters.detect`) reads them as it reads the real widths, so a LoRA trained on
a tiny model tells its family as a real one does. tiny-kolors' cross-attention counts as `sdxl`, as real
Kolors' does: the same blocks and widths as SDXL's, only metadata says Kolors.
"""

from __future__ import annotations

__all__ = ["TINY_CROSS_ATTENTION_WIDTHS", "TINY_TEXT_WIDTHS"]

SD15_WIDTH = 32  # tiny-sd15's text encoder and its UNet's cross-attention (768 in SD 1.x)
SD2_TEXT_WIDTH = 40  # OpenCLIP ViT-H is 1024 wide, CLIP ViT-L 768: the stand-ins differ too
SDXL_CROSS_WIDTH = 80  # 32 (CLIP-L stand-in) + 48 (bigG stand-in), concatenated
KOLORS_CROSS_WIDTH = 48  # ChatGLM3's 4096 projected by the UNet's text projection (to 2048 in Kolors)

TINY_CROSS_ATTENTION_WIDTHS = {
    SD15_WIDTH: "sd15",
    SD2_TEXT_WIDTH: "sd2",
    SDXL_CROSS_WIDTH: "sdxl",
    KOLORS_CROSS_WIDTH: "sdxl",
}
TINY_TEXT_WIDTHS = {SD15_WIDTH: "sd15", SD2_TEXT_WIDTH: "sd2"}
