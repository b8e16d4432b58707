"""The A1111 dialect's model titles and per-user options, on top of the studio.

A1111 names a model by its title ("name.safetensors [hash10]") and keeps options (the model,
VAE, CLIP skip...) that later requests read. Each user has their own options over the
server's (`StudioSettings.options`); they are checked before they are kept, so one client's
options cannot break the next request. The options live beside their studio (one set per
`Studio`, found with `options_of`), so every app and route serving it sees the same ones.
"""

from __future__ import annotations

import json
import math
import re
import threading
import weakref
from typing import Any

from lorastudio.errors import InvalidRequest, LimitExceeded, NotFoundError
from lorastudio.service.a1111 import CHOICE_OPTIONS, FLAG_OPTIONS, NUMBER_OPTIONS
from lorastudio.service.models import titled_models
from lorastudio.service.names import find_vae
from lorastudio.service.studio import Studio
from lorastudio.service.workspace import MODEL_SUFFIXES

__all__ = ["NO_VAE", "A1111Options", "model_name_from_title", "model_title", "options_of"]

_TITLE_HASH = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]\s*$")
# sd_vae values that mean "the model's own VAE".
NO_VAE = {"", "automatic", "none"}


def model_name_from_title(studio: Studio, title: str) -> str:
    """ "name.safetensors [abc123]", "name.safetensors" or "name" -> the library name."""
    text = _TITLE_HASH.sub("", str(title or "")).strip()
    for suffix in MODEL_SUFFIXES:
        if text.lower().endswith(suffix):
            text = text[: -len(suffix)]
            break
    names = {row["name"] for row in titled_models(studio.workspace)}
    if text not in names:
        raise NotFoundError(f"model {title!r}: not in the library; choose one of: {', '.join(sorted(names))}.")
    return text


def model_title(studio: Studio, name: str | None = None) -> str:
    """The A1111 title of a library model (the default model when `name` is None)."""
    name = name or studio.model
    for row in titled_models(studio.workspace):
        if row["name"] == name:
            return row["title"]
    return name


def _clip_skip(value: Any, where: str) -> int:
    """CLIP_stop_at_last_layers as the whole number 1..12 A1111 means (1 = last layer)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        value = None
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number != int(number) or not 1 <= number <= 12:
        raise InvalidRequest(f"{where}.CLIP_stop_at_last_layers: {value!r} is not a whole number 1..12.")
    return int(number)


def _number_option(value: Any, field: str, where: str) -> float | int:
    """A number option (`initial_noise_multiplier`) within its GenerateConfig field's bounds; a whole-number
    field's (`eta_noise_seed_delta`) stays a whole number."""
    from pydantic import ValidationError

    from lorastudio.generate.config import GenerateConfig

    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{where}: {value!r} is not a number.")
    try:
        GenerateConfig(**{field: value})
    except ValidationError as exc:
        raise InvalidRequest(f"{where}: {exc.errors(include_url=False)[0]['msg']}.") from None
    return int(value) if GenerateConfig.model_fields[field].annotation is int else float(value)


class A1111Options:
    """Every user's A1111 options and default model (`sd_model_checkpoint`) for one studio."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self._options: dict[str, dict[str, Any]] = {}  # per user: what they set over the defaults
        self._user_models: dict[str, str] = {}  # per user: their sd_model_checkpoint

    def options(self, user: str = "") -> dict[str, Any]:
        """A user's A1111 options: the server's (`settings.options`) overlaid with what they set."""
        return {**self.studio.settings.options, **self._options.get(user, {})}

    def model_for(self, user: str = "") -> str:
        """The model a user's requests use when they name none: theirs from /options, else the default."""
        return self._user_models.get(user, self.studio.model)

    def check(self, values: dict[str, Any], where: str = "options") -> dict[str, Any]:
        """Option values validated the way later requests read them; bad ones raise a 4xx error.

        Checked before they are kept, so one client's options cannot break the next request.
        """
        studio = self.studio
        checked = dict(values)
        if "CLIP_stop_at_last_layers" in checked:
            checked["CLIP_stop_at_last_layers"] = _clip_skip(checked["CLIP_stop_at_last_layers"], where)
        for option in FLAG_OPTIONS:
            if option in checked and not isinstance(checked[option], bool):
                raise InvalidRequest(f"{where}.{option}: true or false.")
        for option, (_, words, _) in CHOICE_OPTIONS.items():
            if option in checked:
                given = str(checked[option]).strip().lower() if isinstance(checked[option], str) else None
                word = next((w for w in words if w.lower() == given), None)  # "cpu" -> "CPU", "LOGSNR" -> "logSNR"
                if word is None:
                    raise InvalidRequest(f"{where}.{option}: {checked[option]!r}; use one of {', '.join(words)}.")
                checked[option] = word
        for option, field in NUMBER_OPTIONS.items():
            if option in checked:
                checked[option] = _number_option(checked[option], field, f"{where}.{option}")
        if "sd_vae" in checked and checked["sd_vae"] is not None:
            vae = checked["sd_vae"]
            if not isinstance(vae, str):
                raise InvalidRequest(f"{where}.sd_vae: give a VAE file name in models/ or 'Automatic'.")
            if vae.strip().lower() not in NO_VAE:
                find_vae(studio.workspace, vae, studio.names)
        if checked.get("sd_model_checkpoint") is not None:
            title = checked["sd_model_checkpoint"]
            if not isinstance(title, str):
                raise InvalidRequest(f"{where}.sd_model_checkpoint: give a model title from /sd-models.")
            checked["sd_model_checkpoint"] = model_name_from_title(studio, title)
        try:
            size = len(json.dumps(checked, allow_nan=False))
        except (TypeError, ValueError):
            raise InvalidRequest(f"{where}: values must be plain JSON (no NaN or Infinity).") from None
        limit = studio.settings.max_options_bytes
        if limit and size > limit:
            raise LimitExceeded(
                f"{where}: {size} bytes of options, over the server's limit of {limit} "
                "(lorastudio serve --max-options-kb)."
            )
        return checked

    def update(self, values: dict[str, Any], user: str = "") -> None:
        """A1111 POST /options, for this user only; `sd_model_checkpoint` becomes their default model."""
        values = {k: v for k, v in values.items() if v is not None}
        merged = {**self._options.get(user, {}), **values}
        merged.pop("sd_model_checkpoint", None)
        checked = self.check({**merged, **values})
        model = checked.pop("sd_model_checkpoint", None)
        if model:
            self._user_models[user] = model
        self._options[user] = checked


_BY_STUDIO: weakref.WeakKeyDictionary[Studio, A1111Options] = weakref.WeakKeyDictionary()
_BY_STUDIO_LOCK = threading.Lock()


def options_of(studio: Studio) -> A1111Options:
    """The A1111 options of this studio (made on first use; they live as long as the studio)."""
    with _BY_STUDIO_LOCK:
        options = _BY_STUDIO.get(studio)
        if options is None:
            options = _BY_STUDIO[studio] = A1111Options(studio)
        return options
