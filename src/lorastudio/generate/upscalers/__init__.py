"""Image upscalers: A1111's names, the ESRGAN family, SwinIR and SCUNet, and tiled inference.

`names` is pure (what GenerateConfig validates against); `loading` reads a weight file and builds
the network (RRDBNet in the Real-ESRGAN and the old ESRGAN layout, SRVGGNetCompact, SwinIR, SCUNet,
or anything `spandrel` knows when it is installed); `tiling` runs a network over an image in tiles. The
networks are written here from the published layouts (no basicsr/torchvision dependency).
Import the torch modules by their path: this package's root imports no torch.
"""

from lorastudio.generate.upscalers.names import (
    FIXED_UPSCALERS,
    LATENT_UPSCALE_MODES,
    RESAMPLE_UPSCALERS,
    fixed_upscaler,
    is_latent_mode,
    model_upscaler_title,
)

__all__ = [
    "FIXED_UPSCALERS",
    "LATENT_UPSCALE_MODES",
    "RESAMPLE_UPSCALERS",
    "fixed_upscaler",
    "is_latent_mode",
    "model_upscaler_title",
]
