"""One model evaluation with classifier-free guidance: the UNet calls for the negative prompt and
every AND sub-prompt, and their weighted sum (A1111's `combine_denoised`).

A prompt and a negative prompt of the same length share one UNet call; of different lengths
(75-token chunks) they run as two calls, as A1111 does by default, unless `pad_conds` pads the
shorter with empty chunks (A1111's "Pad prompt/negative prompt" option: faster, other pictures)
or `pad_conds_v0` fits the negative prompt to the prompt's length (A1111 before 1.6).
A ControlNet stack adds its residuals to each call and counts the evaluation once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lorastudio.generate.config import GenerateConfig

if TYPE_CHECKING:
    import torch

    from lorastudio.generate.conditioning import TextConditioning

__all__ = ["GuidedUnet", "combine_composable"]


@dataclass(frozen=True)
class _UnetCall:
    """The text inputs of one UNet call: `rows` conditionings of `batch` images each, the first
    `uncond_rows` images the negative prompt's."""

    context: Any
    added: dict[str, Any] | None
    rows: int
    uncond_rows: int


class GuidedUnet:
    """The model's UNet as the sampler calls it: latents in, the guided prediction out."""

    def __init__(self, model: Any, cfg: GenerateConfig, encoder: Any, control: Any = None) -> None:
        self.model = model
        self.cfg = cfg
        self.encoder = encoder  # its `empty_chunk()` pads (pad_conds)
        self.control = control  # a generate.control.ControlStack or None
        self._cache: tuple | None = None  # see _calls
        self.padded = False  # a prompt and its negative were padded to one length (infotext "Pad conds")
        self.padded_v0 = False  # the negative prompt was cut or extended to the prompt's ("Pad conds v0")

    def predict(
        self,
        latent_in: torch.Tensor,
        t: torch.Tensor | float,
        cond: TextConditioning,
        weights: list[float],
        uncond: TextConditioning | None,
        batch: int,
        width: int,
        height: int,
    ) -> torch.Tensor:
        """The predictions for the negative prompt and every AND sub-prompt (`cond` has a row each),
        combined; without `uncond` (CFG <= 1, plain prompt) the prompt's prediction as it is.

        The rows are `[uncond, sub-prompt 1, sub-prompt 2, ...]`, each `batch` images long, in one
        UNet call or two (`_calls`).
        """
        import torch

        outputs = []
        for index, call in enumerate(self._calls(cond, uncond, batch, width, height)):
            sample = torch.cat([latent_in] * call.rows) if call.rows > 1 else latent_in
            kwargs = {} if call.added is None else {"added_cond_kwargs": call.added}
            if self.control is not None:
                residuals = self.control.residuals(
                    sample, t, call.context, kwargs, call.uncond_rows, same_evaluation=index > 0
                )
                kwargs.update(residuals)
            outputs.append(self.model.unet(sample, t, encoder_hidden_states=call.context, **kwargs).sample)
        out = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
        if uncond is None:
            return out
        out_uncond, *out_conds = out.chunk(len(weights) + 1)
        return combine_composable(out_uncond, out_conds, weights, self.cfg.cfg_scale)

    def _calls(self, cond, uncond, batch: int, width: int, height: int) -> list[_UnetCall]:
        """The UNet calls of one evaluation, with their text context (and SDXL's added conditioning).

        Built once and reused while the prompt schedule stays on the same conditionings (every
        step without prompt editing), so a step does not re-pad, re-concatenate or copy SDXL's
        time ids to the device again. The cache holds the conditionings it was built from, so
        `is` compares them safely.
        """
        from lorastudio.generate.conditioning import fit_to_length, pad_to_same_length

        cached = self._cache
        if cached is not None and cached[0] is cond and cached[1] is uncond and cached[2] == (batch, width, height):
            return cached[3]
        size = (batch, width, height)
        c = cond.embeds
        if uncond is None:
            calls = [self._call([c], [cond.pooled], 0, *size)]
        else:
            u = uncond.embeds
            if self.cfg.pad_conds_v0 and u.shape[1] != c.shape[1]:  # A1111 tries v0 first
                u = fit_to_length(u, c.shape[1])
                self.padded_v0 = True
            elif self.cfg.pad_conds and u.shape[1] != c.shape[1]:
                u, c = pad_to_same_length(u, c, self.encoder.empty_chunk())
                self.padded = True
            cond_rows = list(c.split(1))
            cond_pooled = list(cond.pooled.split(1)) if cond.pooled is not None else [None] * len(cond_rows)
            if u.shape[1] == c.shape[1]:
                calls = [self._call([u, *cond_rows], [uncond.pooled, *cond_pooled], batch, *size)]
            else:  # A1111 without "Pad conds": the negative prompt's call, then the prompt's
                calls = [self._call([u], [uncond.pooled], batch, *size), self._call(cond_rows, cond_pooled, 0, *size)]
        self._cache = (cond, uncond, size, calls)
        return calls

    def _call(self, rows: list, pooled_rows: list, uncond_rows: int, batch: int, width: int, height: int) -> _UnetCall:
        """One UNet call's text inputs: `rows`, each for `batch` images, and SDXL's pooled vectors and time ids."""
        import torch

        model = self.model
        context = torch.cat([row.expand(batch, -1, -1) for row in rows]).to(model.dtype)
        added = None
        if model.family.uses_pooled_text:
            time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=model.device, dtype=model.dtype)
            pooled = torch.cat([row.expand(batch, -1) for row in pooled_rows])
            added = {"text_embeds": pooled, "time_ids": time_ids.expand(pooled.shape[0], -1)}
        return _UnetCall(context, added, len(rows), uncond_rows)


def combine_composable(
    out_uncond: torch.Tensor, out_conds: list, weights: list[float], cfg_scale: float
) -> torch.Tensor:
    """`uncond + cfg_scale * sum_i w_i * (cond_i - uncond)`: A1111's CFG with AND sub-prompts.

    Accumulated term by term like A1111's `combine_denoised`, so one sub-prompt of weight 1
    is exactly the classic `uncond + cfg_scale * (cond - uncond)`. The sum is affine in the
    predictions, so it means the same for noise, v or x0 predictions.
    """
    guided = out_uncond
    for out_cond, weight in zip(out_conds, weights, strict=True):
        guided = guided + (weight * cfg_scale) * (out_cond - out_uncond)
    return guided
