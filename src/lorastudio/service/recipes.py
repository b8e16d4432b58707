"""Recipes: the request that remakes an image, from our YAML recipe or any A1111-style PNG.

What cannot come back exactly is said in notes (structured, so the web UI words them in its
language and the CLI prints them): a model this workspace lacks, replaced by the caller's; a
LoRA found under another name by its hash; a model, VAE, LoRA or embedding changed since the image
was made (`service.recipe_hashes`: the file with the recorded hash used where the workspace still
has one); an image made on a device this machine lacks (made on this one's instead); noise that
can still differ from the image's. HCP-Diffusion's inference configs are read too (`service.recipe_hcp`).
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
from lorastudio.service.names import LENIENT, STRICT, NamePolicy
from lorastudio.service.recipe_hashes import Pins, change_note, check_networks, model_change, vae_change
from lorastudio.service.recipe_hcp import is_hcp_infer
from lorastudio.service.recipe_loras import lora_hash_pairs, rename_loras_by_hash
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
    # `<lora:NAME>` files from outside loras/ it used (a grid's training checkpoints), as `lora_files`, and
    # files with the hashes it recorded where its names now find others (`service.recipe_hashes`)
    lora_files: dict[str, Path] = field(default_factory=dict)
    embedding_files: dict[str, Path] = field(default_factory=dict)  # word: file, the same for embeddings


@dataclass
class Recipe:
    config: GenerateConfig
    notes: list[RecipeNote] = field(default_factory=list)
    control_slots: list[int] = field(default_factory=list)  # each `config.controlnet` unit's `ControlNet N`
    grid: dict[str, Any] | None = None  # a grid image's X/Y/Z plot, for the web form (`form_grid`)
    replay: Replay = field(default_factory=Replay)
    styles: list[str] = field(default_factory=list)  # styles.csv styles taken out of the prompts (`form_styles`)


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
    is left out with a note (`service.recipe_form`), the sampler comes split from its schedule, a
    grid image's X/Y/Z plot axes come back in `Recipe.grid`, and the styles of `studio/styles.csv` the
    prompts hold are taken out of them into `Recipe.styles` (A1111's "Apply if any").
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
        data = _read_yaml(path)
        if is_hcp_infer(data):  # HCP-Diffusion's config beside its image, or one of its cfgs/infer files
            from lorastudio.service.recipe_hcp import hcp_request

            request, notes = hcp_request(data, path, ws, model, given, STRICT if form else LENIENT)
            return Recipe(_validated(request, path, "edit the config"), notes)
        request, replay, notes = _yaml_request(data, path, ws, given, form)
        config = _validated(request, path, "edit the recipe")
        # our images number their units from 0 in request order (`service.control.control_infotext`)
        return Recipe(config, notes, control_slots=list(range(len(config.controlnet))), replay=replay)
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
    policy = STRICT if form else LENIENT  # a server's form never reads a path an image names
    request["model"] = _model_from_infotext(ws, params, model, notes, policy)
    if request["model"] == str(params.get("Model", "") or ""):  # found by its name: is it still that model?
        _changed_model(ws, request, str(params.get("Model hash", "") or ""), notes, policy)
    for old, new in rename_loras_by_hash(ws, params, request):  # as A1111's paste: same file, other name
        notes.append(
            RecipeNote("lora_renamed", {"old": old, "new": new}, f"LoRA {old} is {new} here (same hash).")
        )
    pins = check_networks(
        ws, request, lora_hash_pairs(params.get("Lora hashes")), lora_hash_pairs(params.get("TI hashes")), notes, form
    )
    notes += noise_notes(params)  # `service.recipe_noise`: where the noise can still differ
    notes += _picture_notes(params, request, given)
    styles: list[str] = []
    if form:
        from lorastudio.service.recipe_form import form_request, form_styles

        request = form_request(ws, request, notes)
        styles = form_styles(ws, request)
    elif request.get("vae") and not vae_given:
        request["vae"] = _vae_from_infotext(ws, request["vae"])
    if request.get("vae") and not vae_given:
        _changed_vae(ws, request, str(params.get("VAE hash", "") or ""), notes, policy)
    slots = [unit.pop("slot") for unit in request["controlnet"]]
    replay = Replay(lora_files=pins.loras, embedding_files=pins.embeddings)
    return Recipe(_validated(request, path, "edit the image's parameters"), notes, slots, grid, replay, styles)


def _validated(request: dict[str, Any], path: Path, fix: str) -> GenerateConfig:
    """The request as a GenerateConfig; the first field it refuses as one line naming the file."""
    from pydantic import ValidationError

    try:
        return GenerateConfig.model_validate(request)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in error.get("loc", ())) or "request"
        raise LorastudioError(f"{path}: {where}: {error['msg']}; {fix}.") from None


def _read_yaml(path: Path) -> Any:
    from lorastudio.config import read_text_file

    try:
        return yaml.safe_load(read_text_file(path, "recipe")) or {}
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise LorastudioError(f"{path}: not valid YAML ({first}); fix the syntax.") from None


def _yaml_request(
    data: Any, path: Path, ws: Workspace, given: set[str], form: bool = False
) -> tuple[dict[str, Any], Replay, list[RecipeNote]]:
    """Our recipe's request for its own image (`_image_request`), the model by hash, its pictures
    found (`find_recipe_pictures`), its weights checked against the hashes it recorded and its device
    this machine's where it lacks the recipe's; what else remakes the image exactly; notes on what may not."""
    from lorastudio.service.recipe_inputs import find_recipe_pictures

    if not isinstance(data, dict) or not isinstance(data.get("request"), dict) or not data["request"]:
        raise LorastudioError(
            f"{path}: not a lorastudio recipe (no `request:` mapping) nor an HCP-Diffusion infer config; pass"
            " the .yaml written beside an image."
        )
    request = dict(data["request"])
    request.setdefault("old_step_noise", "rng" not in request)  # written before `rng`: seed + 1 step noise
    request.setdefault("old_unipc", "unipc_order" not in request)  # written before A1111's UniPC: diffusers' UniPC
    image = data.get("image") if isinstance(data.get("image"), dict) else {}
    position = _image_request(request, image, given)
    notes: list[RecipeNote] = []
    model_info = data.get("model") if isinstance(data.get("model"), dict) else {}
    policy = STRICT if form else LENIENT
    match = None
    if model_info.get("hash") and not _model_available(ws, request.get("model", ""), policy):
        match = Library(ws).model_by_hash(model_info["hash"])
        if match:
            request["model"] = match["name"]
    if not match and "model" not in given:  # found by its name: is it still that model?
        _changed_model(ws, request, str(model_info.get("sha256") or model_info.get("hash") or ""), notes, policy)
    notes += _device_notes(request, image, given)
    find_recipe_pictures(request, path, given)
    control_seed = image.get("control_seed") if isinstance(image.get("control_seed"), int) else None
    lora_files = _pinned_files(data, "lora_files", "LoRA", path, given)
    embedding_files = _pinned_files(data, "embedding_files", "embedding", path, given)
    pins = Pins({}, {})
    if {"prompt", "negative_prompt", "hires_prompt", "hires_negative_prompt"} & given:  # made with today's files
        embedding_files = {}
    else:
        loras, embeddings = _recorded(data, "loras", lora_files), _recorded(data, "embeddings", embedding_files)
        pins = check_networks(ws, request, loras, embeddings, notes, form)
    if request.get("vae") and "vae" not in given:
        _changed_vae(ws, request, _infotext_value(data, "VAE hash"), notes, policy)
    replay = Replay(position, control_seed, {**lora_files, **pins.loras}, {**embedding_files, **pins.embeddings})
    return request, replay, notes


def _recorded(data: dict[str, Any], key: str, pinned: dict[str, Path]) -> dict[str, str]:
    """A recipe's `loras:` or `embeddings:` as {name: hash}, less the names it pins to files."""
    rows = data.get(key) if isinstance(data.get(key), list) else []
    return {
        str(row["name"]): str(row["hash"])
        for row in rows
        if isinstance(row, dict) and row.get("name") and row.get("hash") and str(row["name"]) not in pinned
    }


def _infotext_value(data: dict[str, Any], key: str) -> str:
    """One value of the infotext a recipe keeps ("" without it)."""
    from lorastudio.generate.infotext import parse_infotext

    text = data.get("infotext")
    return str(parse_infotext(text, fill_defaults=False).get(key, "") or "") if isinstance(text, str) else ""


def _changed_model(
    ws: Workspace, request: dict[str, Any], recorded: str, notes: list[RecipeNote], policy: NamePolicy
) -> None:
    """The request's model where its file no longer has the `recorded` hash: the library's model that has
    it (the request renamed), or a note that the picture will differ."""
    change = model_change(ws, str(request.get("model") or ""), recorded, policy)
    if change is not None:
        if change.use:
            request["model"] = change.use
        notes.append(change_note(change))


def _changed_vae(
    ws: Workspace, request: dict[str, Any], recorded: str, notes: list[RecipeNote], policy: NamePolicy
) -> None:
    """The same for the request's VAE: a VAE file in models/ with the `recorded` hash, or a note."""
    change = vae_change(ws, str(request["vae"]), recorded, policy)
    if change is not None:
        if change.use:
            request["vae"] = change.use
        notes.append(change_note(change))


def _device_notes(request: dict[str, Any], image: dict[str, Any], given: set[str]) -> list[RecipeNote]:
    """The device a recipe records is where its image was made, not a requirement: it is kept where this
    machine has it (the same arithmetic, the same pixels), else this machine's default is used, with a note.
    Any device this machine cannot use is so, whatever torch says of it (a driver's RuntimeError too)."""
    made = str(image.get("device") or request.get("device") or "")
    if "device" in given or not made:
        return []
    from lorastudio.models.loading import pick_device

    try:
        device, _ = pick_device(made)
        _, _, index = device.partition(":")
        if device.startswith("cuda") and index:
            import torch

            if int(index) >= torch.cuda.device_count():
                raise LorastudioError(f"{device}: no such GPU here")
        request["device"] = made
        return []
    except (LorastudioError, ValueError, RuntimeError):
        request["device"] = None
    here = pick_device(None)[0]
    if here.partition(":")[0] == made.partition(":")[0]:
        return []
    return [
        RecipeNote(
            "device_changed",
            {"made": made, "here": here},
            f"the image was made on {made}; generating on {here} here, so the pixels may differ"
            " (GPU and CPU arithmetic differ).",
        )
    ]


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


def _pinned_files(data: dict[str, Any], key: str, what: str, path: Path, given: set[str]) -> dict[str, Path]:
    """The recipe's `lora_files` or `embedding_files` (name: file); a moved file is one line, unless the
    prompt is given anew."""
    pinned = data.get(key) if isinstance(data.get(key), dict) else {}
    files = {str(name): Path(str(file)) for name, file in pinned.items()}
    for name, file in files.items():
        if not file.is_file() and "prompt" not in given:
            raise NotFoundError(
                f"{path}: its {what} {name} file {file} is missing (moved or deleted); put it back, or edit the recipe."
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


def _model_available(ws: Workspace, ref: str, policy: NamePolicy = LENIENT) -> bool:
    """A model this workspace finds by `ref` (a name, with or without its suffix; leniently a path; not a hub id)."""
    from lorastudio.service.names import find_model

    try:
        return bool(ref) and find_model(ws, ref, policy, build=False).path is not None
    except LorastudioError:
        return False


def _workspace_model(ws: Workspace, params: dict, policy: NamePolicy = LENIENT) -> str | None:
    """This workspace's name for the image's model: by name, else by short hash; None if it lacks it."""
    name = str(params.get("Model", "") or "")
    if _model_available(ws, name, policy):
        return name
    short = str(params.get("Model hash", "") or "")
    match = Library(ws).model_by_hash(short) if short else None
    return match["name"] if match else None


def _model_from_infotext(
    ws: Workspace, params: dict, fallback: str | None, notes: list[RecipeNote], policy: NamePolicy = LENIENT
) -> str:
    """The image's model in this workspace; else `fallback` (noted where the image names one);
    else one line saying what to do."""
    found = _workspace_model(ws, params, policy)
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
