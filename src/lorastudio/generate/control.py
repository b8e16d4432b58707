"""ControlNet units at sampling time: control maps prepared per pass, residuals summed per UNet call.

The sampler holds a `ControlStack` and asks it once per UNet call for the UNet's
`down_block_additional_residuals` / `mid_block_additional_residual`. What a unit does follows
the A1111 ControlNet extension, so a request means the same image here:

- a unit acts only in the steps of a pass inside its [guidance_start, guidance_end] window
  (diffusers' rule: step i of n acts when i/n >= start and (i+1)/n <= end, so [0, 0] never acts);
- "My prompt is more important" scales the residuals softly, `weight * 0.825 ** (12 - i)` for
  residual i (the deepest the strongest); "ControlNet is more important" does the same and gives
  the control to the prompt's rows only, not the negative prompt's, so CFG pushes towards it;
- in a hires pass, canny and MLSD maps get the soft scales in every mode (hard one-pixel edges
  upscaled make artifacts otherwise), as the extension does;
- a mask (white = act) multiplies every residual at its own resolution;
- `hr_option` picks the passes a unit acts in (both, the first only, the hires only);
- the control map meets each pass's size by the unit's resize mode: "Just Resize" stretches,
  "Crop and Resize" covers and crops the centre, "Resize and Fill" fits and pads with the
  median colour of the map's border.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

if TYPE_CHECKING:
    import torch

__all__ = [
    "ControlStack",
    "PreparedUnit",
    "fit_control_image",
    "pixel_perfect_resolution",
    "soft_scales",
    "step_is_active",
]

SOFT_INJECTION_BASE = 0.825  # the extension's per-level decay in its soft modes
SOFT_INJECTION_LEVELS = 13  # SD's 12 down residuals + the mid one; SDXL uses the first 10
HIRES_SOFT_MODULES = ("canny", "mlsd")  # modules the extension always injects softly in a hires pass


def soft_scales(weight: float, count: int) -> list[float]:
    """The extension's soft-injection scales for `count` residuals (down..., mid)."""
    scales = [weight * SOFT_INJECTION_BASE ** float(SOFT_INJECTION_LEVELS - 1 - i) for i in range(SOFT_INJECTION_LEVELS)]
    if count <= SOFT_INJECTION_LEVELS:
        return scales[:count]
    return [weight * SOFT_INJECTION_BASE ** float(count - 1 - i) for i in range(count)]


def step_is_active(step: int, steps: int, start: float, end: float) -> bool:
    """Whether step `step` (from 0) of a pass of `steps` lies in the unit's guidance window, as the
    extension decides it: by `sampling_step / steps`, both ends included, where A1111's
    `sampling_step` is the last finished step's index while a step is sampled (0 for steps 0 and 1,
    then one behind). So 20 steps ending at 0.5 act in steps 0..11, and [0, 0] in the first two."""
    if steps <= 0:
        return False
    percent = max(step - 1, 0) / steps
    return not (percent < start or percent > end)


def pixel_perfect_resolution(image_size: tuple[int, int], width: int, height: int, resize_mode: str) -> int:
    """The preprocessor resolution that lands the map 1:1 on the output (the extension's estimate).

    The short side of the image scaled as its resize mode will scale it: fit for "Resize and
    Fill", cover for the others.
    """
    raw_w, raw_h = image_size
    scale_h, scale_w = height / raw_h, width / raw_w
    scale = min(scale_h, scale_w) if resize_mode == "Resize and Fill" else max(scale_h, scale_w)
    return int(round(scale * min(raw_w, raw_h)))


def _resample_for(image: Image.Image, smaller: bool) -> Image.Resampling:
    """Maps of a few flat colours (segmentation, pose) keep their colours; others resample smoothly."""
    colours = image.getcolors(maxcolors=256)
    if colours is not None and 2 < len(colours) < 200:
        return Image.Resampling.NEAREST
    return Image.Resampling.BOX if smaller else Image.Resampling.BICUBIC


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    smaller = size[0] * size[1] < image.size[0] * image.size[1]
    return image.resize(size, _resample_for(image, smaller))


def _border_median(image: Image.Image) -> tuple[int, ...]:
    import numpy as np

    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]], axis=0)
    return tuple(int(v) for v in np.median(border, axis=0))


def fit_control_image(image: Image.Image, width: int, height: int, resize_mode: str) -> Image.Image:
    """The control map at width x height by the unit's resize mode."""
    if resize_mode == "Just Resize" or image.size == (width, height):
        return _resized(image, (width, height))
    raw_w, raw_h = image.size
    if resize_mode == "Resize and Fill":
        scale = min(width / raw_w, height / raw_h)
        inner = _resized(image, (max(1, round(raw_w * scale)), max(1, round(raw_h * scale))))
        fill = _border_median(image)
        canvas = Image.new(image.mode, (width, height), fill if len(fill) > 1 else fill[0])
        canvas.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
        return canvas
    scale = max(width / raw_w, height / raw_h)  # Crop and Resize
    covered = _resized(image, (max(width, round(raw_w * scale)), max(height, round(raw_h * scale))))
    left, top = (covered.width - width) // 2, (covered.height - height) // 2
    return covered.crop((left, top, left + width, top + height))


@dataclass
class PreparedUnit:
    """One unit ready to sample with: its loaded ControlNet and its control map (after the preprocessor)."""

    label: str  # "ControlNet unit 0", for messages
    controlnet: Any  # diffusers ControlNetModel, on the model's device and dtype
    image: Image.Image  # RGB control map, any size: fitted to each pass
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = "Balanced"
    resize_mode: str = "Crop and Resize"
    hr_option: str = "Both"
    module: str = "none"
    mask: Image.Image | None = None  # L, the size of the image: white = where the unit acts
    # L, the size of the image: white = the hole an inpaint ControlNet fills (its hint is -1 there)
    hole: Image.Image | None = None

    def acts_in(self, hires: bool) -> bool:
        if self.hr_option == "Low res only":
            return not hires
        if self.hr_option == "High res only":
            return hires
        return True

    def soft(self, hires: bool) -> bool:
        if self.control_mode != "Balanced":
            return True
        return hires and any(name in self.module for name in HIRES_SOFT_MODULES)


@dataclass
class _PassUnit:
    unit: PreparedUnit
    cond: Any  # (1, 3, H, W) in 0..1
    mask: Any | None  # (1, 1, H, W) in 0..1


@dataclass
class ControlStack:
    """The units of a request; the sampler tells it each pass and step and asks it per UNet call."""

    units: Sequence[PreparedUnit]
    device: Any = "cpu"
    dtype: Any = None
    _pass: list[_PassUnit] = field(default_factory=list)
    _steps: int = 0
    _order: int = 1
    _calls: int = 0
    _hires: bool = False

    def begin_pass(self, width: int, height: int, calls: int, order: int, hires: bool) -> None:
        """A new pass of `calls` UNet calls (`order` per sampling step) at width x height; `hires`:
        the hires fix's second pass. Steps count from the pass's first executed step (img2img too)."""
        from lorastudio.generate.images import pil_to_tensor

        self._steps, self._order, self._calls, self._hires = -(-calls // order), order, 0, hires
        self._pass = []
        for unit in self.units:
            if not unit.acts_in(hires):
                continue
            fitted = fit_control_image(unit.image.convert("RGB"), width, height, unit.resize_mode)
            cond = pil_to_tensor(fitted, self.device, self.dtype) * 0.5 + 0.5
            if unit.hole is not None:  # the inpaint ControlNet's hint: the hole's pixels at -1
                hole = fit_control_image(unit.hole.convert("RGB"), width, height, unit.resize_mode)
                inside = (pil_to_tensor(hole, self.device, self.dtype)[:, :1] > 0).to(cond.dtype)
                cond = cond * (1 - inside) - inside
            mask = None
            if unit.mask is not None:
                fitted_mask = fit_control_image(unit.mask.convert("RGB"), width, height, unit.resize_mode)
                mask = (pil_to_tensor(fitted_mask, self.device, self.dtype) * 0.5 + 0.5)[:, :1]
            self._pass.append(_PassUnit(unit, cond, mask))

    def residuals(
        self,
        latent_in: torch.Tensor,
        t: torch.Tensor | float,
        context: torch.Tensor,
        unet_kwargs: dict,
        uncond_rows: int,
        *,
        same_evaluation: bool = False,
    ) -> dict:
        """UNet kwargs with the summed residuals of the units active at this call ({} when none is).

        Called once per UNet call; the first `uncond_rows` rows of `latent_in` are the negative
        prompt's (0: none, the prompt's rows only). A model evaluation run as two UNet calls (a
        prompt and a negative prompt of different lengths) counts once: its second call says
        `same_evaluation`.
        """
        if not same_evaluation:
            self._calls += 1
        step = (self._calls - 1) // self._order
        added_cond_kwargs = unet_kwargs.get("added_cond_kwargs")
        down_total, mid_total = None, None
        for item in self._pass:
            unit = item.unit
            if not step_is_active(step, self._steps, unit.guidance_start, unit.guidance_end):
                continue
            down, mid = self._one_unit(item, latent_in, t, context, added_cond_kwargs, uncond_rows)
            if down_total is None:
                down_total, mid_total = down, mid
            else:
                down_total = [a + b for a, b in zip(down_total, down, strict=True)]
                mid_total = mid_total + mid
        if down_total is None:
            return {}
        return {"down_block_additional_residuals": down_total, "mid_block_additional_residual": mid_total}

    def _one_unit(self, item: _PassUnit, latent_in, t, context, added_cond_kwargs, uncond_rows: int):
        unit = item.unit
        controlnet = unit.controlnet
        sample = latent_in
        if sample.shape[1] != controlnet.config.in_channels and sample.shape[1] == 9:
            sample = sample[:, :4]  # an inpainting UNet's input: 4 latents + mask + masked image
        rows = sample.shape[0]
        kwargs = {"added_cond_kwargs": added_cond_kwargs} if added_cond_kwargs else {}
        down, mid = controlnet(
            sample,
            t,
            encoder_hidden_states=context,
            controlnet_cond=item.cond.expand(rows, -1, -1, -1),
            conditioning_scale=1.0,
            return_dict=False,
            **kwargs,
        )
        outputs = [*down, mid]
        if unit.soft(self._hires):
            scales = soft_scales(unit.weight, len(outputs))
        else:
            scales = [unit.weight] * len(outputs)
        outputs = [out * scale for out, scale in zip(outputs, scales, strict=True)]
        if unit.control_mode == "ControlNet is more important" and uncond_rows:
            outputs = [self._without_uncond(out, uncond_rows) for out in outputs]
        if item.mask is not None:
            outputs = [out * self._mask_at(item.mask, out) for out in outputs]
        return outputs[:-1], outputs[-1]

    @staticmethod
    def _without_uncond(out, uncond_rows: int):
        """The control on the prompt's rows only (the extension's cfg injection)."""
        out = out.clone()
        out[:uncond_rows] = 0
        return out

    @staticmethod
    def _mask_at(mask, out):
        import torch

        return torch.nn.functional.interpolate(mask, size=tuple(out.shape[-2:]), mode="bilinear").to(out.dtype)
