"""A1111's upscaler names: the latent modes, the resampling filters and the model titles.

The six latent modes interpolate the latents (mode, antialias) as A1111's
`shared.latent_upscale_modes` does; `None`, `Lanczos` and `Nearest` resize the decoded image;
any other name is a model file in `studio/models/upscalers`, shown as A1111 shows it: the
Real-ESRGAN releases by their A1111 titles, the SwinIR and ScuNET files A1111 downloads (under
their release names or the names A1111 saves them as) by the titles it lists them under before the
download, every other file by its stem (ESRGAN style).
A file is found by its title or its stem, so recipes written either way resolve. Two files with
one title (a release name and A1111's saved download, both `SwinIR 4x`) are listed apart, as A1111
lists every file: `title_claim` says which keeps the title; the other is listed by its stem.
"""

from __future__ import annotations

__all__ = [
    "A1111_DOWNLOAD_STEMS",
    "FIXED_UPSCALERS",
    "LATENT_UPSCALE_MODES",
    "REAL_ESRGAN_TITLES",
    "RELEASE_TITLES",
    "RESAMPLE_UPSCALERS",
    "fixed_upscaler",
    "is_latent_mode",
    "model_upscaler_title",
    "title_claim",
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


# The SwinIR / ScuNET files A1111 downloads (stems, lower case) -> the titles it offers them as: the
# release names, and the names A1111 saves its downloads under (`SwinIR_4x.pth`, `ScuNET.pth`: its
# swinir_model.py / scunet_model.py pass `file_name=` to the download), so a copied models folder
# and a recipe's `Hires upscaler: SwinIR 4x` find them.
RELEASE_TITLES: dict[str, str] = {
    "003_realsr_bsrgan_dfowmfc_s64w8_swinir-l_x4_gan": "SwinIR 4x",
    "swinir_4x": "SwinIR 4x",
    "scunet_color_real_gan": "ScuNET GAN",
    "scunet": "ScuNET GAN",
    "scunet_color_real_psnr": "ScuNET PSNR",
}


# The names A1111 saves its downloads under (its `file_name=`): the very file A1111 ran for that title.
A1111_DOWNLOAD_STEMS: frozenset[str] = frozenset({"swinir_4x", "scunet"})


def title_claim(stem: str, title: str) -> int:
    """How strongly the file `stem` holds `title` when files share it (lower wins): a file named the
    title itself, then A1111's saved download of it, then a release name."""
    if stem.lower() == title.lower():
        return 0
    return 1 if stem.lower() in A1111_DOWNLOAD_STEMS else 2


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
    """What A1111 calls the model file `stem`: a Real-ESRGAN, SwinIR or ScuNET title, or the stem itself."""
    key = stem.lower()
    return REAL_ESRGAN_TITLES.get(key) or RELEASE_TITLES.get(key, stem)
