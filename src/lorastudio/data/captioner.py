"""Image-to-text captioning with transformers (BLIP, BLIP-2, GIT, Florence-2-class models).

Anything `AutoProcessor` + `AutoModelForImageTextToText` (or the older Vision2Seq auto
class) can load works. The model comes from a local folder or a hub id already in the
cache; with `allow_download=False` (the default) nothing is fetched at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from lorastudio.data.config import CaptionerConfig
from lorastudio.data.tagger import looks_like_hub_id
from lorastudio.errors import LorastudioError, NotFoundError

__all__ = ["Captioner", "pick_device"]


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _load_model(source: str, local_only: bool) -> Any:
    import transformers

    errors = []
    for class_name in ("AutoModelForImageTextToText", "AutoModelForVision2Seq", "AutoModelForCausalLM"):
        auto = getattr(transformers, class_name, None)
        if auto is None:
            continue
        try:
            return auto.from_pretrained(source, local_files_only=local_only)
        except ValueError as exc:  # "Unrecognized configuration class" for this auto class
            errors.append(f"{class_name}: {str(exc).splitlines()[0]}")
    raise LorastudioError(
        f"captioner {source!r}: no image-to-text model class fits ({'; '.join(errors)[:300]})."
    )


# What `Captioner` loads, for messages: transformers' auto classes read a model folder, not a file.
EXPECTED_MODEL = (
    "a transformers image-to-text model folder (BLIP, BLIP-2, GIT or Florence-2 class: config.json, the"
    " weights and the processor/tokenizer files, as Salesforce/blip-image-captioning-large ships them)"
)


def check_captioner_source(source: str) -> None:
    """Refuse, before transformers loads, what cannot be a captioner: a single weights file (kohya's
    make_captions takes the original BLIP repo's `model_large_caption.pth`, which transformers cannot
    read) or a path that is neither a folder nor a hub id."""
    path = Path(source).expanduser()
    if path.is_dir() or (looks_like_hub_id(source) and not path.suffix):
        return
    if path.is_file() or path.suffix.lower() in {".pth", ".pt", ".ckpt", ".bin", ".safetensors"}:
        raise NotFoundError(
            f"captioner {source!r}: a single weights file; the captioner loads {EXPECTED_MODEL}. kohya's"
            " make_captions BLIP .pth (--caption_weights) is not one: download the transformers BLIP folder"
            " and pass it."
        )
    if not looks_like_hub_id(source):
        raise NotFoundError(f"captioner {source!r}: no such folder; pass {EXPECTED_MODEL}, or a cached hub id.")


class Captioner:
    """Loads once, then captions batches of PIL images."""

    def __init__(self, config: CaptionerConfig):
        source = config.model
        check_captioner_source(source)
        import torch
        from transformers import AutoProcessor

        self.config = config
        local_only = not config.allow_download
        try:
            self.processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
            self.model = _load_model(source, local_only)
        except (OSError, ValueError) as exc:
            raise NotFoundError(
                f"captioner {source!r}: cannot load it ({str(exc).splitlines()[0][:160]}); pass {EXPECTED_MODEL},"
                " or a hub id downloaded while online."
            ) from None
        self.device = pick_device(config.device)
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.model.to(self.device, dtype=dtype).eval()
        self.dtype = dtype

    def caption(self, images: list[Image.Image]) -> list[str]:
        import torch

        kwargs: dict[str, Any] = {
            "images": [image.convert("RGB") for image in images],
            "return_tensors": "pt",
        }
        if self.config.prompt:
            kwargs["text"] = [self.config.prompt] * len(images)
        inputs = self.processor(**kwargs)
        inputs = {
            k: (v.to(self.device, dtype=self.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in inputs.items()
            if hasattr(v, "to")
        }
        with torch.inference_mode():
            generated = self.model.generate(
                **inputs, max_new_tokens=self.config.max_new_tokens, num_beams=self.config.num_beams
            )
        texts = self.processor.batch_decode(generated, skip_special_tokens=True)
        return [" ".join(text.split()) for text in texts]
