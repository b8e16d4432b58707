"""Small builders shared by the training tests: image folders and CPU-sized tiny-sd15 configs."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from lorastudio.train.config import TrainConfig, load_train_config


def write_images(folder: Path, items: list[tuple[tuple[int, int, int], str | None]], size: int = 64) -> Path:
    """One solid-colour PNG per (colour, caption) item, with a same-stem `.txt` when captioned."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (colour, caption) in enumerate(items):
        Image.new("RGB", (size, size), colour).save(folder / f"{i}.png")
        if caption is not None:
            (folder / f"{i}.txt").write_text(caption, encoding="utf-8")
    return folder


def tiny_train_config(data_dir, trigger: str, *extra: str) -> TrainConfig:
    """A tiny-sd15 run at 64 px in fp32; `extra` key=value overrides come last and win."""
    return load_train_config(
        overrides=[
            "model=tiny-sd15",
            f"data.dir={data_dir}",
            f"trigger={trigger}",
            "train.resolution=64",
            "train.mixed_precision=no",
            *extra,
        ]
    )
