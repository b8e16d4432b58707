"""Recipes: the request that remakes an image, from our YAML recipe or any A1111-style PNG.

What cannot come back exactly is said in notes (structured, so the web UI words them in its
language and the CLI prints them): a model this workspace lacks, replaced by the caller's; a
LoRA found under another name by its hash; noise that can still differ from the image's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.generate.config import GenerateConfig
from lorastudio.service.library import Library
from lorastudio.service.recipe_loras import rename_loras_by_hash
from lorastudio.service.recipe_noise import noise_notes
from lorastudio.service.recipe_notes import RecipeNote
from lorastudio.service.workspace import Workspace

__all__ = ["Recipe", "RecipeNote", "Replay", "config_from_recipe", "read_recipe"]

# Request fields that choose which images a request makes: given anew, a recipe's image is no longer
# remade with its batch, only by its own seed.
_IMAGE_CHOICE = frozenset({"seed", "subseed", "batch_size", "count"})


@dataclass(frozen=True)
class Replay:
    """What remakes a YAML recipe's image exactly beyond its request (`run_generation(replay=...)`)."""

    # The image's place in its batch: the batch is made again and only that image kept (a batch is not
    # bit-identical to its images made one by one: batched kernels round otherwise); None: the request's only image.
    position: int | None = None
    control_seed: int | None = None  # the seed its ControlNet preprocessors drew with (content shuffle)
    # `<lora:NAME>` files from outside loras/ it used (a grid's training checkpoints), as `lora_files`
    lora_files: dict[str, Path] = field(default_factory=dict)


@dataclass
class Recipe:
    config: GenerateConfig
    notes: list[RecipeNote] = field(default_factory=list)
    control_slots: list[int] = field(default_factory=list)  # each `config.controlnet` unit's `ControlNet N`
    grid: dict[str, Any] | None = None  # a grid image's X/Y/Z plot, for the web form (`form_grid`)
    replay: Replay = field(default_factory=Replay)


def config_from_recipe(
    path: str | Path, ws: Workspace, vae_given: bool = False, model: str | None = None
) -> GenerateConfig:
    """`read_recipe`'s request alone."""
    return read_recipe(path, ws, vae_given, model).config


def read_recipe(
    path: str | Path,
    ws: Workspace,
    vae_given: bool = False,
    model: str | None = None,
    form: bool = False,
    given: Iterable[str] = (),
) -> Recipe:
    """A request that reproduces an image, and notes on what may not come back the same.

    `given`: the request fields the caller replaces anyway (the CLI's options): a picture the recipe
    names (`service.recipe_inputs`) must exist unless given anew, and an image's parameters, which
    carry no pictures, get a note for those an img2img, inpaint or ControlNet image needs.
    A VAE named by the image must be in this workspace (another VAE makes another image),
    unless the caller overrides the VAE anyway (`vae_given`, e.g. `--vae`). So must its model,
    unless the caller names the model to use where the image's is missing or not given (`model`:
    `--model`, the Generate form's current model, as A1111 keeps its checkpoint then). `form`:
    for the web form, as A1111's paste: a VAE, sampler, schedule or hires upscaler this studio lacks
    is left out with a note (`service.recipe_form`), the sampler comes split from its schedule, and a
    grid image's X/Y/Z plot axes come back in `Recipe.grid`.
    """
    from lorastudio.generate.a1111_fields import config_fields_from_infotext
    from lorastudio.generate.infotext import add_version_flags, parse_infotext, read_infotext
    from lorastudio.service.control import units_from_infotext

    path = Path(path)
    if not path.is_file():
        raise LorastudioError(
            f"{path}: recipe not found; pass a .yaml recipe or a PNG made by lorastudio or A1111."
        )
    given = set(given)
    vae_given = vae_given or "vae" in given
    if path.suffix.lower() in {".yaml", ".yml"}:
        request, replay = _yaml_request(path, ws, given)
        config = _validated(request, path, "edit the recipe")
        # our images number their units from 0 in request order (`service.control.control_infotext`)
        return Recipe(config, control_slots=list(range(len(config.controlnet))), replay=replay)
    text = read_infotext(path)
    if not text:
        raise LorastudioError(
            f"{path}: has no generation parameters; use an image saved by lorastudio or A1111."
        )
    params = parse_infotext(text, fill_defaults=False)
    add_version_flags(params)  # an older webui's image regenerates with its old behaviours, as in A1111
    notes: list[RecipeNote] = []
    grid = None
    if form:
        from lorastudio.service.recipe_form import form_grid, form_params

        params = form_params(params, notes)
        grid = form_grid(params, notes)
    request = config_fields_from_infotext(params)
    request["controlnet"] = units_from_infotext(params)  # without images, as the extension restores them
    request["model"] = _model_from_infotext(ws, params, model, notes)
    for old, new in rename_loras_by_hash(ws, params, request):  # as A1111's paste: same file, other name
        notes.append(
            RecipeNote("lora_renamed", {"old": old, "new": new}, f"LoRA {old} is {new} here (same hash).")
        )
    notes += noise_notes(params)  # `service.recipe_noise`: where the noise can still differ
    notes += _picture_notes(params, request, given)
    if form:
        from lorastudio.service.recipe_form import form_request

        request = form_request(ws, request, notes)
    elif request.get("vae") and not vae_given:
        request["vae"] = _vae_from_infotext(ws, request["vae"])
    slots = [unit.pop("slot") for unit in request["controlnet"]]
    return Recipe(_validated(request, path, "edit the image's parameters"), notes, slots, grid)


def _validated(request: dict[str, Any], path: Path, fix: str) -> GenerateConfig:
    """The request as a GenerateConfig; the first field it refuses as one line naming the file."""
    from pydantic import ValidationError

    try:
        return GenerateConfig.model_validate(request)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error.get("loc", ())) or "request"
        raise LorastudioError(f"{path}: {where}: {error['msg']}; {fix}.") from None


def _yaml_request(path: Path, ws: Workspace, given: set[str]) -> tuple[dict[str, Any], Replay]:
    """Our recipe's request for its own image (`_image_request`), the model by hash and its pictures
    found (`find_recipe_pictures`); and what else remakes the image exactly."""
    from lorastudio.config import read_text_file
    from lorastudio.service.recipe_inputs import find_recipe_pictures

    try:
        data = yaml.safe_load(read_text_file(path, "recipe")) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise LorastudioError(f"{path}: not valid YAML ({first}); fix the syntax.") from None
    if not isinstance(data, dict) or not isinstance(data.get("request"), dict) or not data["request"]:
        raise LorastudioError(
            f"{path}: not a lorastudio recipe (no `request:` mapping); pass the .yaml written beside an image."
        )
    request = dict(data["request"])
    request.setdefault("old_step_noise", "rng" not in request)  # written before `rng`: seed + 1 step noise
    image = data.get("image") if isinstance(data.get("image"), dict) else {}
    position = _image_request(request, image, given)
    model_info = data.get("model") if isinstance(data.get("model"), dict) else {}
    if model_info.get("hash") and not _model_available(ws, request.get("model", "")):
        match = Library(ws).model_by_hash(model_info["hash"])
        if match:
            request["model"] = match["name"]
    find_recipe_pictures(request, path, given)
    control_seed = image.get("control_seed") if isinstance(image.get("control_seed"), int) else None
    return request, Replay(position, control_seed, _pinned_lora_files(data, path, given))


def _image_request(request: dict[str, Any], image: dict[str, Any], given: set[str]) -> int | None:
    """Make `request` remake the recipe's image (its seed, variation seed); answers the image's place
    in its batch where that batch is made again (seeds count up through a batch: `generate.pipeline`,
    the variation seed instead where one is on), None where the image is made alone."""
    if "seed" not in image:
        return None
    size, index = int(request.get("batch_size") or 1), int(image.get("index") or 0)
    if size == 1 or _IMAGE_CHOICE & given:
        request.update(seed=image["seed"], batch_size=1, count=1)
        if "subseed" in image:
            request["subseed"] = image["subseed"]
        return None
    position = index % size
    if "subseed" in image:  # a variation: every image keeps the seed, the variation seed counts up
        request.update(seed=image["seed"], subseed=image["subseed"] - position)
    else:
        request["seed"] = image["seed"] - position
    request["count"] = 1
    return position


def _pinned_lora_files(data: dict[str, Any], path: Path, given: set[str]) -> dict[str, Path]:
    """The recipe's `lora_files` (name: file); a moved file is one line, unless the prompt is given anew."""
    pinned = data.get("lora_files") if isinstance(data.get("lora_files"), dict) else {}
    files = {str(name): Path(str(file)) for name, file in pinned.items()}
    for name, file in files.items():
        if not file.is_file() and "prompt" not in given:
            raise NotFoundError(
                f"{path}: its LoRA {name} file {file} is missing (moved or deleted); put it back, or edit the recipe."
            )
    return {name: file for name, file in files.items() if file.is_file()}


def _picture_notes(params: dict[str, Any], request: dict[str, Any], given: set[str]) -> list[RecipeNote]:
    """Pictures an image was made from that its parameters do not carry (as in A1111): its img2img
    picture, its inpaint mask, its ControlNet units' images; without them it comes back as another picture."""
    missing = []
    if "strength" in request and "init_image" not in given:  # Denoising strength without a hires pass
        missing.append("init image")
    if params.get("Mask blur") not in (None, "") and "mask" not in given:
        missing.append("mask")
    if "controlnet" not in given:
        missing += [f"ControlNet unit {unit['slot']} image" for unit in request.get("controlnet") or []]
    if not missing:
        return []
    pictures = ", ".join(missing)
    return [
        RecipeNote(
            "pictures_not_carried",
            {"pictures": pictures},
            f"the image was made from pictures its parameters do not carry ({pictures}); give them again"
            " (--init-image, --mask, --control), or the picture will differ.",
        )
    ]


def _vae_from_infotext(ws: Workspace, name: str) -> str:
    """The image's `VAE` by name in models/; one line when this workspace lacks it."""
    from lorastudio.service.names import find_vae

    try:
        find_vae(ws, name)
    except LorastudioError:
        raise NotFoundError(
            f"VAE {name!r} from the image is not in this workspace; put it in models/ or pass --vae."
        ) from None
    return name


def _model_available(ws: Workspace, ref: str) -> bool:
    from lorastudio.models.tiny import is_tiny_name

    return bool(ref) and (is_tiny_name(ref) or (ws.models / ref).exists() or Path(ref).exists())


def _workspace_model(ws: Workspace, params: dict) -> str | None:
    """This workspace's name for the image's model: by name, else by short hash; None if it lacks it."""
    name = str(params.get("Model", "") or "")
    if _model_available(ws, name):
        return name
    short = str(params.get("Model hash", "") or "")
    match = Library(ws).model_by_hash(short) if short else None
    return match["name"] if match else None


def _model_from_infotext(ws: Workspace, params: dict, fallback: str | None, notes: list[RecipeNote]) -> str:
    """The image's model in this workspace; else `fallback` (noted where the image names one);
    else one line saying what to do."""
    found = _workspace_model(ws, params)
    if found:
        return found
    if fallback:
        named = str(params.get("Model", "") or params.get("Model hash", "") or "")
        if named:
            notes.append(
                RecipeNote(
                    "model_kept",
                    {"named": named, "model": fallback},
                    f"the image's model {named} is not in this workspace; generating with {fallback}.",
                )
            )
        return fallback
    name = str(params.get("Model", "") or "")
    short = str(params.get("Model hash", "") or "")
    if not name and not short:
        raise NotFoundError("the image does not say which model made it; pass --model NAME to pick one.")
    raise NotFoundError(
        f"model {name or short!r} from the image is not in this workspace; import it with "
        "`lorastudio models import`, or pass --model NAME to use another."
    )
