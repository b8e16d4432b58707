"""The infotext keys of A1111's UniPC options and lorastudio's `Old UniPC`.

A1111 reads `UniPC variant`, `UniPC skip type`, `UniPC order` and `UniPC lower order final` from an
infotext into its options (uni_pc_*), and its webuis 1.1-1.5 wrote each one that differed from its default
on a UniPC image; lorastudio writes them so, where A1111's UniPC sampled (`generate.samplers.a1111_unipc`).
`Old UniPC: True` marks an image sampled with lorastudio's UniPC from before (diffusers' defaults,
`GenerateConfig.old_unipc`); an image from before `RNG` was written (`noise_fields.made_before_rng`) was too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.generate.config import UNIPC_SKIP_TYPES, UNIPC_VARIANTS
from lorastudio.generate.noise_fields import made_before_rng
from lorastudio.generate.plan import hires_sampler_choice
from lorastudio.generate.samplers import a1111_unipc, parse_sampler

__all__ = ["UNIPC_KEYS", "read_old_unipc", "unipc_reader", "unipc_writer", "write_old_unipc"]

# GenerateConfig field -> (infotext key, A1111's default)
UNIPC_KEYS: dict[str, tuple[str, Any]] = {
    "unipc_variant": ("UniPC variant", "bh1"),
    "unipc_skip_type": ("UniPC skip type", "time_uniform"),
    "unipc_order": ("UniPC order", 3),
    "unipc_lower_order_final": ("UniPC lower order final", True),
}

# The words a field takes, spelled as GenerateConfig does; an infotext's are read in any case, as A1111's API reads
# its uni_pc_* options ("logsnr" -> "logSNR", "BH2" -> "bh2").
_WORDS: dict[str, tuple[str, ...]] = {"unipc_variant": UNIPC_VARIANTS, "unipc_skip_type": UNIPC_SKIP_TYPES}


def _samples_unipc(cfg: Any, old: bool) -> bool:
    """Whether the request's sampler, or its hires pass's own, is UniPC run A1111's way (`old`: lorastudio's old way).
    The hires pass's is picked as the pipeline picks it (`plan.hires_sampler_choice`): its own sampler or the first
    pass's, on its own schedule or the first pass's — `Hires schedule type: Automatic` after `UniPC Karras` too."""
    if old != bool(cfg.old_unipc):
        return False
    try:
        first = parse_sampler(cfg.sampler, cfg.schedule)
    except LorastudioError:
        return False
    choices = [first]
    if cfg.hires_on:
        try:
            choices.append(hires_sampler_choice(cfg, first))
        except LorastudioError:
            pass
    return any(a1111_unipc(choice) for choice in choices)


def unipc_writer(field: str) -> Callable[[Any, Any], Any]:
    key, default = UNIPC_KEYS[field]

    def write(cfg: Any, facts: Any) -> Any:
        value = getattr(cfg, field)
        return value if value != default and _samples_unipc(cfg, old=False) else None

    return write


def unipc_reader(field: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    key, default = UNIPC_KEYS[field]

    def read(params: dict[str, Any]) -> dict[str, Any]:
        text = str(params.get(key, "") or "").strip()
        if not text:
            return {}
        if isinstance(default, bool):
            return {field: text.lower() in ("true", "1", "yes")}
        if isinstance(default, int):
            try:
                return {field: int(float(text))}
            except ValueError:
                raise LorastudioError(f"infotext {key!r}: {text!r} is not a number; fix or remove it.") from None
        words = _WORDS[field]
        word = next((w for w in words if w.lower() == text.lower()), None)
        if word is None:
            raise LorastudioError(f"infotext {key!r}: {text!r}; use one of {', '.join(words)}, or remove it.")
        return {field: word}

    return read


def write_old_unipc(cfg: Any, facts: Any) -> Any:
    return True if cfg.old_unipc and _samples_unipc(cfg, old=True) else None


def read_old_unipc(params: dict[str, Any]) -> dict[str, Any]:
    """`old_unipc` for an image that says `Old UniPC: True` or was made before `RNG` was written."""
    written = str(params.get("Old UniPC", "") or "").strip().lower() in ("true", "1", "yes")
    return {"old_unipc": True} if written or made_before_rng(params) else {}
