"""OFT (orthogonal finetuning): a file that rotates a layer's output rows instead of adding to them.

kohya's `networks.oft` (`oft_unet_…` names) and LyCORIS' diag-OFT (`lora_unet_…`) save per layer
`oft_blocks` B [blocks, size, size] and `alpha`, a constraint. The weight's output rows, cut into
`blocks` groups of `size`, are rotated:

    Q = B − Bᵀ (skew-symmetric), its norm capped at alpha · out_rows (alpha 0 or absent: no cap)
    R = (I + Q)(I − Q)⁻¹ (Cayley: orthogonal)
    W' = Rᵀ W per group, then × `rescale` per row when LyCORIS saved one

Older LyCORIS saved `oft_diag`, R itself, which A1111 applies as such; so do we. At strength s
the weight moves by s · (W' − W), as A1111 applies it (kohya and LyCORIS interpolate R the same
way, s · (R − I) + I). ComfyUI caps Q at alpha rather than alpha · out_rows and applies its
strength twice; we follow the trainers. BOFT (4-D `oft_blocks`) is refused where it is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["OftModule"]


@dataclass
class OftModule:
    """One layer's OFT rotation: `blocks` (B, or R itself when `is_rotation`), constraint `alpha`."""

    blocks: torch.Tensor
    alpha: float | None = None
    rescale: torch.Tensor | None = None
    is_rotation: bool = False  # old LyCORIS `oft_diag`
    kind: str = "linear"
    scale = 1.0
    type_name = "oft"

    @property
    def rank(self) -> int:
        """The number of blocks (kohya's `network_dim` for OFT)."""
        return int(self.blocks.shape[0])

    def rotation(self, out_rows: int, device: torch.device | str | None = None) -> torch.Tensor:
        """R per block, float32 [blocks, size, size]; `out_rows` sets the constraint (alpha · out_rows)."""
        import torch

        blocks = self.blocks.to(device=device, dtype=torch.float32)
        if self.is_rotation:
            return blocks
        q = blocks - blocks.transpose(1, 2)
        cap = float(self.alpha or 0.0) * out_rows
        norm = torch.linalg.vector_norm(q)
        if cap > 0 and float(norm) > cap:
            q = q * (cap / norm)
        eye = torch.eye(q.shape[-1], device=q.device, dtype=q.dtype).expand_as(q)
        return (eye + q) @ torch.linalg.inv(eye - q)

    def rotated(self, weight: torch.Tensor) -> torch.Tensor:
        """W' = Rᵀ W per block of output rows (× rescale), float32 and shaped like `weight`."""
        import torch

        weight = weight.to(torch.float32)
        r = self.rotation(weight.shape[0], weight.device)
        count, size = int(r.shape[0]), int(r.shape[1])
        if count * size != weight.shape[0]:  # the patcher words shape errors (RuntimeError) per layer
            raise RuntimeError(f"{count} OFT blocks of {size} rows do not cover {weight.shape[0]} rows")
        grouped = weight.reshape(count, size, -1)
        out = torch.einsum("knm,kni->kmi", r, grouped).reshape(weight.shape)
        if self.rescale is not None:
            out = out * self.rescale.to(out).reshape(weight.shape[0], *[1] * (weight.dim() - 1))
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"oft_diag" if self.is_rotation else "oft_blocks": self.blocks}
        return out | ({"rescale": self.rescale} if self.rescale is not None else {})
