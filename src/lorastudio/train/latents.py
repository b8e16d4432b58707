"""VAE latents cached on disk, keyed by image content hash + VAE weights hash.

Encoding is the slowest per-image work and never changes between runs on the same
images and VAE, so the cache lives in the workspace (`cache/latents/<vae>/`) and is
shared by every run. Latents are the distribution mean, already scaled for diffusion.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from lorastudio.data.buckets import resize_to_bucket
from lorastudio.data.images import open_image
from lorastudio.errors import LorastudioError
from lorastudio.train.data import TrainImage

if TYPE_CHECKING:
    from collections.abc import Callable

    from diffusers import AutoencoderKL

    from lorastudio.data.buckets import Bucket

__all__ = ["vae_hash", "LatentCache", "check_cache_space", "encode_image"]


def vae_hash(vae: AutoencoderKL) -> str:
    """SHA-256 over the VAE's tensors (names, shapes, bytes): changes iff the weights change."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_cache_space(folder: Path, images: list[TrainImage], flip: bool) -> None:
    """Refuse to start when the latent cache would not fit on the disk."""
    needed = sum(4 * 4 * (img.bucket[0] // 8) * (img.bucket[1] // 8) + 4096 for img in images) * (
        2 if flip else 1
    )
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed + (64 << 20):
        raise LorastudioError(
            f"{folder}: {free >> 20} MiB free but the latent cache needs about {(needed >> 20) + 64} MiB; free disk space.",
            key="disk_space",
            params={"folder": folder, "free_mib": free >> 20, "needed_mib": (needed >> 20) + 64},
        )


def _pixels(image: Image.Image, flipped: bool) -> torch.Tensor:
    if flipped:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@torch.no_grad()
def encode_image(vae: AutoencoderKL, image: Image.Image, bucket: Bucket, flipped: bool) -> torch.Tensor:
    """One image, resized to its bucket (and flipped), as a scaled latent on the CPU."""
    pixels = _pixels(resize_to_bucket(image, bucket), flipped)
    sample = pixels.unsqueeze(0).to(vae.device, vae.dtype)
    latent = vae.encode(sample).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latent - shift) * vae.config.scaling_factor)[0].float().cpu()


class LatentCache:
    """Latents for a run's images, loaded once into memory from the shared disk cache."""

    def __init__(self, root: Path, vae: AutoencoderKL, vae_digest: str):
        self.folder = root / vae_digest[:16]
        self.vae = vae
        self._latents: dict[tuple[int, bool], torch.Tensor] = {}

    def _path(self, image: TrainImage, flipped: bool) -> Path:
        w, h = image.bucket
        return self.folder / f"{image.digest[:24]}-{w}x{h}{'-flip' if flipped else ''}.safetensors"

    def _encode(self, image: TrainImage, flipped: bool) -> torch.Tensor:
        return encode_image(self.vae, open_image(image.path), image.bucket, flipped)

    def missing(self, images: list[TrainImage], flip: bool) -> int:
        """How many latents `prepare` would encode (not on disk yet)."""
        sides = (False, True) if flip else (False,)
        return sum(not self._path(image, flipped).is_file() for image in images for flipped in sides)

    def prepare(
        self, images: list[TrainImage], flip: bool, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Load or encode every latent the run needs; returns how many were encoded now."""
        from safetensors.torch import load_file, save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        encoded = 0
        for index, image in enumerate(images):
            for flipped in (False, True) if flip else (False,):
                path = self._path(image, flipped)
                if path.is_file():
                    latent = load_file(str(path))["latent"]
                else:
                    latent = self._encode(image, flipped)
                    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
                    save_file({"latent": latent.contiguous()}, str(tmp))
                    tmp.replace(path)
                    encoded += 1
                self._latents[(index, flipped)] = latent
            if progress is not None:
                progress(index + 1, len(images))
        return encoded

    def get(self, index: int, flipped: bool) -> torch.Tensor:
        return self._latents[(index, flipped)]
