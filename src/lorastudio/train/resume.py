"""What a resumed run must keep: the keys that shape its trained tensors and optimizer groups.

A run is changed by editing its `config.yaml`; a key that reshapes the saved state (`lora.rank`
4 -> 8, `method` pivotal -> lora) used to fail deep inside accelerate's loader. The config a
checkpoint was saved with is in its files' metadata (`ss_lorastudio_config`, written since the
first release), so every checkpoint, old ones included, is checked before anything loads.
The step budget may change (a run is extended by raising `train.steps`); so may the rates, but the
saved optimizer and schedule bring their own back, as kohya's `--resume` does, and a line says so.

No torch here: the service calls it before the model loads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lorastudio.errors import LorastudioError

__all__ = ["SHAPING_KEYS", "checkpoint_facts", "check_resumable", "dataset_change", "rate_change"]

# Always compared: another base or another method is another set of tensors.
_RUN_KEYS = ("model", "family", "method", "train.optimizer")
# Compared when the method trains what they shape (dropout and rates shape nothing).
_LORA_KEYS = (
    "lora.rank", "lora.alpha", "lora.targets", "lora.conv_rank", "lora.conv_alpha", "lora.type", "lora.train_text_encoder",
)  # fmt: skip
_EMBEDDING_KEYS = ("trigger", "embedding.num_vectors", "embedding.init_text")
SHAPING_KEYS = (*_RUN_KEYS, *_LORA_KEYS, *_EMBEDDING_KEYS, "train.ema_decay")


_ABSENT = object()  # a key the config does not hold (a checkpoint saved before the key existed)


def _get(config: Mapping[str, Any], dotted: str, missing: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part, missing) if isinstance(node, Mapping) else missing
    return node


def _changes(saved: Mapping[str, Any], config: Mapping[str, Any], keys) -> tuple[list[str], str]:
    """The keys whose value differs between the checkpoint's config and this one, and "key old ->
    new, ..." for a message; a key the checkpoint's config predates (a later lorastudio's) is no change."""
    changed = [key for key in keys if _get(saved, key, _ABSENT) is not _ABSENT and _get(saved, key) != _get(config, key)]
    what = ", ".join(f"{key} {json.dumps(_get(saved, key))} -> {json.dumps(_get(config, key))}" for key in changed)
    return changed, what


def _shape(config: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the keys that decide which tensors the state holds, for this config's method."""
    method = config.get("method")
    keys = list(_RUN_KEYS)
    if method in ("lora", "pivotal"):
        keys += _LORA_KEYS
    if method in ("embedding", "pivotal"):
        keys += _EMBEDDING_KEYS
    shape = {key: _get(config, key) for key in keys}
    # EMA averages are part of the state: on or off must match, the decay itself may change.
    shape["train.ema_decay"] = "set" if _get(config, "train.ema_decay") is not None else None
    return shape


def checkpoint_facts(state: Path) -> dict[str, str] | None:
    """The metadata of the checkpoint `state` (`checkpoints/step-N/state`) belongs to, from the first
    of its files that holds the run's config; None when none does (the checks are then skipped)."""
    from lorastudio.models.checkpoint import read_safetensors_metadata

    state = Path(state)
    for path in sorted(p for p in state.parent.rglob("*.safetensors") if state not in p.parents):
        try:
            facts = read_safetensors_metadata(path)
        except (LorastudioError, OSError, ValueError):
            continue
        if _saved_config(facts) is not None:
            return facts
    return None


def _saved_config(facts: Mapping[str, str] | None) -> dict[str, Any] | None:
    try:
        saved = json.loads((facts or {}).get("ss_lorastudio_config") or "null")
    except json.JSONDecodeError:
        return None
    return saved if isinstance(saved, dict) else None


def check_resumable(config: Mapping[str, Any], facts: Mapping[str, str] | None, run: str, checkpoint: str) -> None:
    """Refuse a resume whose config reshapes what `checkpoint` holds, naming each changed key."""
    saved = _saved_config(facts)
    if saved is None:
        return
    before, now = _shape(saved), _shape(config)
    # a key only one method uses is not compared: the changed `method` already says it
    compared = [key for key in SHAPING_KEYS if key in before and key in now and before[key] != now[key]]
    changed, what = _changes(saved, config, compared)
    if not changed:
        return
    raise LorastudioError(
        f"run {run!r}: config.yaml changes what {checkpoint} trained ({what}); put the old value back"
        " to resume, or start a new run with another output.name."
    )


def dataset_change(config: Mapping[str, Any], facts: Mapping[str, str] | None, images: list) -> str | None:
    """A line when the data set differs from the checkpoint's (another data.dir, image count, or the
    pictures and captions themselves): the run goes on with the current images, but the user should
    know (the result is no longer the uninterrupted run's). `images`: the plan's `TrainImage`s."""
    from lorastudio.train.export import data_fingerprint

    saved = _saved_config(facts)
    if saved is None:
        return None
    notes = []
    if _get(saved, "data.dir") != _get(config, "data.dir"):
        notes.append(f"data.dir was {_get(saved, 'data.dir')!r}, now {_get(config, 'data.dir')!r}")
    try:
        before = sum(int(d.get("img_count", 0)) for d in json.loads(facts.get("ss_dataset_dirs") or "{}").values())
    except (ValueError, TypeError, AttributeError):
        before = 0
    if before and before != len(images):
        notes.append(f"{before} images then, {len(images)} now")
    saved_print = facts.get("ss_lorastudio_data_fingerprint")
    if not notes and saved_print and saved_print != data_fingerprint(images):
        notes.append("pictures or captions edited")
    if not notes:
        return None
    return f"data set: changed since the checkpoint ({'; '.join(notes)}); resuming with the current images."


# The rates the saved optimizer groups and learning-rate schedule hold (restored with them).
_RATE_KEYS = ("train.learning_rate", "train.text_encoder_lr", "embedding.learning_rate", "train.lr_scheduler")


def rate_change(config: Mapping[str, Any], facts: Mapping[str, str] | None) -> str | None:
    """A line when config.yaml changes a rate since the checkpoint: the restored optimizer and
    schedule keep the saved ones, so the edit would otherwise go unnoticed."""
    saved = _saved_config(facts)
    if saved is None:
        return None
    changed, what = _changes(saved, config, _RATE_KEYS)
    if not changed:
        return None
    return (
        f"rates: {what} since the checkpoint; the resumed optimizer and schedule keep the saved ones "
        "(as kohya's --resume); start a new run to train with the new ones."
    )
