"""A1111's upscaler names: the latent modes, the resampling filters and the model titles.

The six latent modes interpolate the latents (mode, antialias) as A1111's
`shared.latent_upscale_modes` does; `None`, `Lanczos` and `Nearest` resize the decoded image;
any other name is a model file in `studio/models/upscalers`, shown as A1111 shows it: the
Real-ESRGAN releases by their A1111 titles, every other file by its stem (ESRGAN style).
"""

from __future__ import annotations

__all__ = [
    "FIXED_UPSCALERS",
    "LATENT_UPSCALE_MODES",
    "REAL_ESRGAN_TITLES",
    "RESAMPLE_UPSCALERS",
    "fixed_upscaler",
    "is_latent_mode",
    "model_upscaler_title",
]

# name -> (torch interpolate mode, antialias)
LATENT_UPSCALE_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}

# name -> Pillow resampling filter; "None" upscales nothing and resizes with Lanczos (as A1111).
RESAMPLE_UPSCALERS: dict[str, str] = {"None": "LANCZOS", "Lanczos": "LANCZOS", "Nearest": "NEAREST"}

# Every name that needs no file, in the order A1111's hires dropdown shows them.
FIXED_UPSCALERS: tuple[str, ...] = (*LATENT_UPSCALE_MODES, *RESAMPLE_UPSCALERS)

# Real-ESRGAN release file stems (lower case) -> the titles A1111 lists them under.
REAL_ESRGAN_TITLES: dict[str, str] = {
    "realesrgan_x4plus": "R-ESRGAN 4x+",
    "realesrgan_x4plus_anime_6b": "R-ESRGAN 4x+ Anime6B",
    "realesrgan_x2plus": "R-ESRGAN 2x+",
    "realesr-general-x4v3": "R-ESRGAN General 4xV3",
    "realesr-general-wdn-x4v3": "R-ESRGAN General WDN 4xV3",
    "realesr-animevideov3": "R-ESRGAN AnimeVideo",
}


def fixed_upscaler(name: str | None) -> str | None:
    """The canonical spelling of a latent mode or resampling filter (any case), else None."""
    wanted = str(name or "").strip().lower()
    for known in FIXED_UPSCALERS:
        if known.lower() == wanted:
            return known
    return None


def is_latent_mode(name: str) -> bool:
    return name in LATENT_UPSCALE_MODES


def model_upscaler_title(stem: str) -> str:
    """What A1111 calls the model file `stem`: a Real-ESRGAN title, or the stem itself."""
    return REAL_ESRGAN_TITLES.get(stem.lower(), stem)
