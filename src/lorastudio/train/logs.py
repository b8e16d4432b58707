"""What a run writes while it trains: `log.jsonl`, TensorBoard scalars and `loss.png`.

The loss curve is drawn with Pillow so a plain install (no matplotlib) still shows it.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from lorastudio.data.manifest import atomic_write_text
from lorastudio.generate.fonts import load_font

__all__ = ["RunLog", "draw_loss_curve", "read_log"]


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class RunLog:
    """Appends one JSON line per step; mirrors scalars to TensorBoard when it is installed."""

    def __init__(self, run_dir: Path, resume_step: int = 0, tensorboard: bool = True):
        self.path = run_dir / "log.jsonl"
        # A resumed run drops lines past its checkpoint: they will be written again.
        kept = [r for r in read_log(self.path) if r.get("step", 0) <= resume_step]
        # Rewritten beside and renamed: a kill right now must not lose the log.
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.records = kept
        self._handle = open(self.path, "a", encoding="utf-8")
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1)
            except ImportError:
                self._writer = None

    def write(self, record: dict) -> None:
        self.records.append(record)
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        if self._writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self._writer.add_scalar(f"train/{key}", value, record["step"])

    def note_once(self, record: dict) -> bool:
        """A line about the run rather than a step (no TensorBoard scalars), written unless a line of
        its `event` is there already (a resumed run keeps it: its step is 0); whether it was written."""
        if any(r.get("event") == record["event"] for r in self.records):
            return False
        self.records.append(record)
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        return True

    def close(self) -> None:
        self._handle.close()
        if self._writer is not None:
            self._writer.close()


def draw_loss_curve(records: list[dict], path: Path, size: tuple[int, int] = (640, 360)) -> Path:
    """Loss per step (grey) and its moving average (blue) on a plain white canvas."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = load_font(12)
    points = [(r["step"], r["loss"]) for r in records if "loss" in r]
    margin = 40
    draw.rectangle([margin, 10, width - 10, height - margin], outline=(180, 180, 180))
    if points:
        steps = [p[0] for p in points]
        losses = [p[1] for p in points]
        window = max(1, len(losses) // 20)
        smooth = [
            sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
            for i in range(len(losses))
        ]
        lo, hi = min(losses), max(losses)
        hi = hi if hi > lo else lo + 1e-6
        first, last = steps[0], max(steps[-1], steps[0] + 1)

        def xy(step: float, loss: float) -> tuple[float, float]:
            x = margin + (step - first) / (last - first) * (width - margin - 10)
            y = height - margin - (loss - lo) / (hi - lo) * (height - margin - 10)
            return x, y

        if len(points) > 1:
            draw.line([xy(s, v) for s, v in points], fill=(190, 190, 190), width=1)
            draw.line([xy(s, v) for s, v in zip(steps, smooth, strict=True)], fill=(40, 90, 200), width=2)
        draw.text((margin, height - margin + 6), f"step {first}", fill="black", font=font)
        draw.text((width - 100, height - margin + 6), f"step {steps[-1]}", fill="black", font=font)
        draw.text((4, 12), f"{hi:.3g}", fill="black", font=font)
        draw.text((4, height - margin - 12), f"{lo:.3g}", fill="black", font=font)
    draw.text((margin + 6, 14), "loss", fill=(40, 90, 200), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
