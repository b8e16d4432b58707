"""What A1111 assumes for keys an infotext does not state (webui 1.10's "PNG Info"), as tables.

`DEFAULTS_BEFORE_OLD_HIRES` and `DEFAULTS_AFTER_OLD_HIRES` fill in keys an image leaves out;
`VERSION_FLAGS` switch on the old behaviour that made an image from an older webui, so it can be
remade. `generate.infotext.fill_a1111_defaults` applies them (the parser's `fill_defaults`); kept
apart from the field table (`generate.a1111_fields`), which maps the keys to `GenerateConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lorastudio.errors import LorastudioError

__all__ = [
    "DEFAULTS_AFTER_OLD_HIRES",
    "DEFAULTS_BEFORE_OLD_HIRES",
    "InfotextDefault",
    "VERSION_FLAGS",
    "VersionFlag",
]


@dataclass(frozen=True)
class InfotextDefault:
    """A key A1111 fills in when an infotext leaves it out (webui 1.10's "PNG Info").

    A tuple value stands for a size's `-1`/`-2` pair, filled as a whole when `-1` is missing.
    `only_if(params)` limits the row to infotexts it holds for.
    """

    key: str
    value: Any
    only_if: Callable[[dict[str, Any]], bool] | None = None


def _fp8_weight_on(params: dict[str, Any]) -> bool:
    return params["FP8 weight"] != "Disable"


def _prompts_use_emphasis(params: dict[str, Any]) -> bool:
    """A weight other than 1 in either prompt (or a prompt the parser rejects) means emphasis."""
    from lorastudio.generate.prompt_parser import parse_prompt_attention

    try:
        pieces = parse_prompt_attention(params["Prompt"]) + parse_prompt_attention(params["Negative prompt"])
    except LorastudioError:
        return True
    return any(weight != 1.0 and text != "BREAK" for text, weight in pieces)


_D = InfotextDefault
# Two tables because the pre-1.0 hires conversion runs between them: it overwrites
# "Hires resize" from the first and may add "Size", and parsed keys keep A1111's order.
DEFAULTS_BEFORE_OLD_HIRES: tuple[InfotextDefault, ...] = (
    _D("Clip skip", "1"),
    _D("Hires resize", (0, 0)),
    _D("Hires sampler", "Use same sampler"),
    _D("Hires schedule type", "Use same scheduler"),
    _D("Hires checkpoint", "Use same checkpoint"),
    _D("Hires prompt", ""),
    _D("Hires negative prompt", ""),
    _D("Mask mode", "Inpaint masked"),
    _D("Masked content", "original"),
    _D("Inpaint area", "Whole picture"),
    _D("Masked area padding", 32),
)
DEFAULTS_AFTER_OLD_HIRES: tuple[InfotextDefault, ...] = (
    _D("RNG", "GPU"),
    _D("Schedule type", "Automatic"),
    _D("Schedule max sigma", 0),
    _D("Schedule min sigma", 0),
    _D("Schedule rho", 0),
    _D("VAE Encoder", "Full"),
    _D("VAE Decoder", "Full"),
    _D("FP8 weight", "Disable"),
    _D("Cache FP16 weight for LoRA", False, _fp8_weight_on),
    _D("Emphasis", "Original", _prompts_use_emphasis),
    _D("Refiner switch by sampling steps", False),
)


@dataclass(frozen=True)
class VersionFlag:
    """A flag A1111 sets (True) on images made before `before` when `only_if(params)` holds.

    These flags switch on the old behaviour that made such an image, so it can be remade.
    """

    key: str
    before: str
    only_if: Callable[[dict[str, Any]], bool] | None = None


VERSION_FLAGS: tuple[VersionFlag, ...] = (
    VersionFlag("Old prompt editing timelines", "1.6.0", lambda params: "[" in params.get("Prompt", "")),
    VersionFlag("Pad conds v0", "1.6.0", lambda params: params.get("Sampler", "") in ("DDIM", "PLMS")),
    VersionFlag("Downcast alphas_cumprod", "1.7.0-225"),  # a build 225 commits after 1.7.0
    VersionFlag("Refiner switch by sampling steps", "1.8.0", lambda params: bool(params.get("Refiner"))),
)
