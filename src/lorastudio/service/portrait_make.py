"""`portrait make`: a person's face painted into template photos (EasyPhoto's inference, offline).

Per face of a template (left to right): a square crop around it at the model's native size, a
feathered face mask, the person's reference face warped onto the template face by 5 points
(the conditioning, and pass 1's start), inpaint pass 1 with the person's LoRA at high denoise
inside the mask (+ a canny and an openpose ControlNet unit when those ControlNets are in
studio/controlnet), colour transfer toward the template's skin, inpaint pass 2 at low denoise,
the face's skin retouched (`skin_retouch`, EasyPhoto's switch; `portrait.retouch`), paste back through
the feathered mask. Then the identity score of the result against the
person's photos; results come sorted by score, best first.

Several persons: each face is its own pair of inpaint passes on its own crop of the untouched
template, with that face's person's LoRA only; so a LoRA acts on its own face and nowhere else.

Every PNG carries an infotext and the recipe (also `<stem>.yaml` beside it): the request with
this image's template and seed, the persons per face, seeds, settings and scores.
`lorastudio portrait make --recipe FILE` (YAML or PNG) makes the same pixels again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import Field, model_validator

from lorastudio import __version__
from lorastudio.config import StrictModel
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.names import STRICT, NamePolicy
from lorastudio.service.portrait_control import KINDS as CONTROL_KINDS
from lorastudio.service.portrait_control import control_models, control_units
from lorastudio.service.portraits import RETOUCH_STRENGTH
from lorastudio.service.templates import find_template, template_faces, templates_folder
from lorastudio.service.workspace import Workspace, safe_name

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from lorastudio.service.jobs.context import JobContext
    from lorastudio.service.jobs.store import Job

__all__ = [
    "RECIPE_KEY",
    "PortraitImage",
    "PortraitMakeConfig",
    "PortraitMakeResult",
    "config_from_portrait_recipe",
    "make_portraits",
    "portrait_make_handler",
    "submit_portrait_make",
]

RECIPE_KEY = "lorastudio-recipe"  # the PNG text chunk holding the recipe (YAML)
MAX_IDENTITY_PHOTOS = 8  # photos of the person an identity score compares against


class PortraitMakeConfig(StrictModel):
    """A `portrait make` request: who goes on which template face, and how the faces are painted."""

    persons: list[str] = Field(default_factory=list, description="Persons, mapped to the faces left to right.")
    faces: dict[int, str] = Field(
        default_factory=dict, description="Face number (1 = leftmost) -> person; wins over `persons` for that face."
    )
    templates: list[str] = Field(..., min_length=1, description="Template names (studio/templates) or photo paths.")
    count: int = Field(1, ge=1, le=100, description="Results per template (seeds seed, seed+1, ...).")
    seed: int = Field(-1, ge=-1, description="Seed of the first result (-1 = random).")
    model: str | None = Field(None, description="Base model; default: the person's, else tiny-sd15's default.")
    prompt: str = Field(
        "{trigger}, photo of a person, close-up portrait, detailed face, natural skin",
        description="Prompt of each face's passes; {trigger} is the person's trigger word.",
    )
    negative_prompt: str = Field("blurry, deformed face, lowres, watermark", description="Negative prompt.")
    lora_weight: float = Field(0.9, ge=0, le=2, description="Weight of the person's LoRA.")
    steps: int = Field(20, ge=1, le=500, description="Sampling steps of each pass.")
    cfg_scale: float = Field(7.0, ge=0, le=50, description="CFG scale.")
    sampler: str = Field("Euler a", description="A1111 sampler name.")
    crop_scale: float = Field(2.5, ge=1.2, le=5, description="Crop side as a multiple of the face box.")
    feather: int | None = Field(None, ge=0, le=256, description="Face-mask feather in template pixels (default: 8% of the crop).")
    first_strength: float = Field(0.7, ge=0, le=1, description="Denoising strength of pass 1 (the LoRA paints the face).")
    second_strength: float = Field(0.3, ge=0, le=1, description="Denoising strength of pass 2 (after colour transfer; 0 = skip).")
    canny: str | None = Field(
        None, description="Canny ControlNet for pass 1: a name in studio/controlnet, 'none' = off; default: one whose name holds 'canny'."
    )
    openpose: str | None = Field(
        None, description="OpenPose ControlNet for pass 1 (needs the openpose preprocessor's weights); 'none' = off; default: by name."
    )
    tile: str | None = Field(
        None, description="Tile ControlNet for pass 2: a name in studio/controlnet, 'none' = off; default: one whose name holds 'tile'."
    )
    control_weight: float = Field(0.5, ge=0, le=2, description="Weight of each ControlNet unit.")
    skin_retouch: bool = Field(True, description="Retouch each painted face's skin (EasyPhoto's UI default; its API's is off).")
    skin_retouch_strength: float = Field(
        RETOUCH_STRENGTH, ge=0, le=1, description="Skin retouch strength: 0 = unchanged, 1 = fully smoothed skin."
    )
    backend: str | None = Field(None, description="Face backend (studio/models/faces/<name>); default: dlib.")
    device: str | None = Field(None, description="cuda, cuda:N or cpu (default: CUDA if present).")

    @model_validator(mode="after")
    def _someone(self) -> PortraitMakeConfig:
        if not self.persons and not self.faces:
            raise ValueError("name at least one person (--person NAME or --face N=NAME)")
        for name in [*self.persons, *self.faces.values()]:
            safe_name(name, "person")
        return self


@dataclass
class PortraitImage:
    path: Path
    recipe_path: Path
    template: str
    seed: int
    score: float | None
    faces: list[dict[str, Any]]


@dataclass
class PortraitMakeResult:
    images: list[PortraitImage] = field(default_factory=list)  # best score first

    def as_json(self) -> dict[str, Any]:
        return {
            "images": [str(i.path) for i in self.images],
            "recipes": [str(i.recipe_path) for i in self.images],
            "templates": [i.template for i in self.images],
            "seeds": [i.seed for i in self.images],
            "scores": [i.score for i in self.images],
            "faces": [i.faces for i in self.images],
        }


@dataclass
class _Person:
    """What the flow needs of a person (`service.portraits.Person`)."""

    name: str
    trigger: str
    lora_tag: str
    lora_hash: str  # A1111's short LoRA hash: a recipe shows which training made the face
    lora_files: dict[str, Path]
    reference: PILImage.Image
    reference_face: Any
    model: str | None
    identity: list[Any]  # embeddings of the person's photos


@dataclass
class _Template:
    ref: str  # as the request named it (a library name, or a path from the CLI)
    path: Path
    image: PILImage.Image
    faces: list[Any]
    persons: dict[int, str]  # face number (1-based) -> person


# --- persons and templates ---------------------------------------------------------------


def _open_rgb(path: Path) -> PILImage.Image:
    from PIL import Image, ImageOps, UnidentifiedImageError

    from lorastudio.image_modes import to_rgb

    try:
        with Image.open(path) as image:
            return to_rgb(ImageOps.exif_transpose(image))  # 16-bit greys kept
    except (OSError, UnidentifiedImageError) as exc:
        raise LorastudioError(f"{path}: not a readable image ({exc}).") from None


def _largest_face(backend: Any, image: PILImage.Image) -> Any | None:
    faces = backend.detect(image)
    return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if faces else None


def _person(ws: Workspace, name: str, backend: Any) -> _Person:
    """The person's LoRA, trigger, reference face and identity (`service.portraits.Person`).

    `load_person` refuses an unknown person and one without a trained LoRA, one line each.
    """
    from lorastudio.adapters.hashing import lora_short_hash
    from lorastudio.service.portraits import load_person

    person = load_person(ws, name)
    lora = Path(person.lora)
    lora_files = {}
    if lora.parent.resolve() == ws.loras.resolve():
        lora_tag = lora.stem  # a library LoRA: `<lora:anna:0.9>` as the user would write it
    else:
        lora_tag = f"portrait-{name}"
        lora_files[lora_tag] = lora
    reference = _open_rgb(Path(person.reference_image))
    return _Person(
        name=name,
        trigger=person.trigger or name,
        lora_tag=lora_tag,
        lora_hash=lora_short_hash(lora),
        lora_files=lora_files,
        reference=reference,
        reference_face=person.reference_face,
        model=person.base_model or None,
        identity=_identity(person, backend, reference),
    )


def _identity(person: Any, backend: Any, reference: PILImage.Image) -> list[Any]:
    """What a result is compared with: the person's mean identity when it comes from this backend,
    else the embeddings of (up to 8 of) the kept photos, else of the reference photo."""
    if person.backend == backend.name and Path(person.embedding).is_file():
        return [person.mean_embedding()]
    identity = []
    for photo in list(person.kept_photos)[:MAX_IDENTITY_PHOTOS]:
        image = _open_rgb(Path(photo))
        face = _largest_face(backend, image)
        if face is not None:
            identity.append(backend.embed(image, face))
    return identity or [backend.embed(reference, person.reference_face)]


def _templates(ws: Workspace, cfg: PortraitMakeConfig, backend: Any, names: NamePolicy) -> list[_Template]:
    from lorastudio.portrait.make import assign_persons

    found = []
    for ref in cfg.templates:
        path = find_template(ws, ref, allow_paths=not names.strict)
        faces = template_faces(ws, path, backend)
        persons = assign_persons(cfg.persons, cfg.faces, len(faces), path.name)
        in_library = path.parent.resolve() == templates_folder(ws).resolve()
        # a recipe names a library template by name, any other photo by its full path
        found.append(_Template(path.stem if in_library else str(path), path, _open_rgb(path), faces, persons))
    return found


# --- one face ---------------------------------------------------------------------------------


@dataclass
class _Pass:
    ws: Workspace
    cfg: PortraitMakeConfig
    cache: Any
    model: str
    size: int
    work: Path
    names: NamePolicy
    should_stop: Callable[[], bool] | None

    def inpaint(self, tag: str, person: _Person, seed: int, init, mask, strength: float, units: list) -> Any:
        """One inpaint pass on a crop: the person's LoRA in the prompt, the crop's mask."""
        from lorastudio.generate.config import GenerateConfig
        from lorastudio.service.generation import run_generation

        init_path, mask_path = self.work / f"{tag}-init.png", self.work / f"{tag}-mask.png"
        init.save(init_path)
        mask.save(mask_path)
        request = GenerateConfig(
            model=self.model,
            prompt=face_prompt(self.cfg, person.trigger, person.lora_tag),
            negative_prompt=self.cfg.negative_prompt,
            steps=self.cfg.steps,
            cfg_scale=self.cfg.cfg_scale,
            sampler=self.cfg.sampler,
            seed=seed,
            width=self.size,
            height=self.size,
            init_image=str(init_path),
            mask=str(mask_path),
            mask_blur=0,  # the mask is feathered already
            inpainting_fill=1,
            strength=strength,
            controlnet=units,
            device=self.cfg.device,
        )
        result = run_generation(
            self.ws, request, self.cache, should_stop=self.should_stop, out_dir=self.work / "passes",
            lora_files=person.lora_files, names=self.names, add_to_library=False,
        )  # fmt: skip
        # A stopped pass hands back its image as far as it got (A1111's interrupt); a portrait is
        # made of finished passes only.
        if not result.images or (self.should_stop is not None and self.should_stop()):
            return None  # stopped
        return _open_rgb(result.images[0].path)


def face_prompt(cfg: PortraitMakeConfig, trigger: str, lora_tag: str) -> str:
    """A face's prompt: the request's prompt with the trigger, then the person's LoRA tag."""
    return f"{cfg.prompt.replace('{trigger}', trigger)} <lora:{lora_tag}:{cfg.lora_weight:g}>"


def _repaint_face(step: _Pass, template: _Template, number: int, person: _Person, seed: int, units: tuple):
    """One face: (repainted crop, crop box, template-sized feathered mask), or None when stopped."""
    from PIL import Image

    from lorastudio.portrait.align import warp_face
    from lorastudio.portrait.colour import transfer_colour
    from lorastudio.portrait.make import cut, square_crop_box
    from lorastudio.portrait.masks import face_mask, skin_mask

    face = template.faces[number - 1]
    image, size = template.image, step.size
    box = square_crop_box(face.box, image.size, step.cfg.crop_scale)
    feather = step.cfg.feather if step.cfg.feather is not None else max(2, round(0.08 * (box[2] - box[0])))
    mask = face_mask(image.size, face, feather)
    template_crop, mask_crop = cut(image, box, size), cut(mask, box, size)
    warped = cut(warp_face(person.reference, person.reference_face, image, face), box, size)
    start = Image.composite(warped, template_crop, mask_crop)  # the person's face where the template's was
    tag = f"{template.path.stem}-{seed}-face{number}"
    template_path = step.work / f"{tag}-template.png"
    template_crop.save(template_path)
    first_units, second_units = units
    # canny reads the start (the person's warped face, the init image); openpose the template's head
    first_units = [u.model_copy(update={"image": str(template_path)}) if u.module == "openpose" else u for u in first_units]
    first = step.inpaint(f"{tag}-1", person, seed, start, mask_crop, step.cfg.first_strength, first_units)
    if first is None:
        return None
    skin = cut(skin_mask(image, face), box, size)
    coloured = transfer_colour(first, template_crop, skin)
    result = coloured
    if step.cfg.second_strength > 0:
        result = step.inpaint(f"{tag}-2", person, seed, coloured, mask_crop, step.cfg.second_strength, second_units)
        if result is None:
            return None
    if step.cfg.skin_retouch and step.cfg.skin_retouch_strength > 0:
        from lorastudio.portrait.retouch import retouch_face

        factor = size / (box[2] - box[0])  # the face in the crop's pixels
        crop_face = face.scaled(factor, (-box[0] * factor, -box[1] * factor))
        result = retouch_face(result, crop_face, step.cfg.skin_retouch_strength)
    return result, box, mask


def _score(backend: Any, image, face, person: _Person) -> tuple[float, float]:
    """(distance, score) of the face at the template face's place against the person's photos."""
    embedding = backend.embed(image, face)
    distance = sum(float(backend.distance(embedding, e)) for e in person.identity) / len(person.identity)
    return distance, 1.0 - distance


# --- the flow -------------------------------------------------------------------------------


def make_portraits(
    ws: Workspace,
    cfg: PortraitMakeConfig,
    cache: Any = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    out_dir: Path | None = None,
    names: NamePolicy = STRICT,
) -> PortraitMakeResult:
    """Every template x `count` seeds: the persons' faces painted in, scored, saved best first.

    Everything that can be refused (persons, templates, faces, ControlNets) is checked before the
    base model is loaded.
    """
    from lorastudio.service.faces import open_backend
    from lorastudio.service.model_cache import ModelCache

    backend = open_backend(ws, cfg.backend)
    templates = _templates(ws, cfg, backend, names)
    persons: dict[str, _Person] = {}
    for template in templates:
        for name in template.persons.values():
            if name not in persons:
                persons[name] = _person(ws, name, backend)
    chosen = control_models(ws, cfg.canny, cfg.openpose, cfg.tile)
    units = control_units(chosen, cfg.control_weight)
    # the recipe names the ControlNets used (or 'none'): found by name today, maybe not tomorrow
    cfg = cfg.model_copy(update={kind: chosen.get(kind, "none") for kind in CONTROL_KINDS})
    first = persons[next(iter(templates[0].persons.values()))]
    model_name = cfg.model or first.model or "tiny-sd15"
    cache = cache or ModelCache(ws, names=names)
    size = cache.get(model_name, cfg.device).native_size
    seed = cfg.seed if cfg.seed >= 0 else random.randrange(2**32 - cfg.count)
    total = sum(len(t.persons) for t in templates) * cfg.count
    done = 0
    made = []
    with tempfile.TemporaryDirectory(prefix="portrait-") as work:
        step = _Pass(ws, cfg, cache, model_name, size, Path(work), names, should_stop)
        for template in templates:
            for k in range(cfg.count):
                rows = []
                for number, name in template.persons.items():
                    repainted = _repaint_face(step, template, number, persons[name], seed + k, units)
                    if repainted is None:
                        return _save(ws, cfg, made, model_name, out_dir)
                    crop, box, mask = repainted
                    rows.append((number, name, crop, box, mask))
                    done += 1
                    if progress:
                        progress(done, total)
                image = _paste_all(template.image, rows)
                faces = []
                for number, name, _crop, box, _mask in rows:
                    distance, score = _score(backend, image, template.faces[number - 1], persons[name])
                    faces.append(_face_row(cfg, template, number, persons[name], box, seed + k, distance, score))
                made.append((template, seed + k, image, faces))
    return _save(ws, cfg, made, model_name, out_dir)


def _paste_all(template_image, rows) -> Any:
    from lorastudio.portrait.make import paste_back

    image = template_image
    for _number, _name, crop, box, mask in rows:
        image = paste_back(image, crop, box, mask)
    return image


def _face_row(cfg, template: _Template, number: int, person: _Person, box, seed: int, distance, score) -> dict[str, Any]:
    return {
        "face": number,
        "person": person.name,
        "box": [round(float(v), 2) for v in template.faces[number - 1].box],
        "crop": list(box),
        "lora": person.lora_tag,
        "lora_hash": person.lora_hash,
        "trigger": person.trigger,
        "prompt": face_prompt(cfg, person.trigger, person.lora_tag),
        "seed": seed,
        "distance": round(distance, 4),
        "score": round(score, 4),
    }


def _overall(faces: list[dict[str, Any]]) -> float | None:
    scores = [f["score"] for f in faces if f.get("score") is not None]
    return round(sum(scores) / len(scores), 4) if scores else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save(ws: Workspace, cfg: PortraitMakeConfig, made: list, model_name: str, out_dir: Path | None) -> PortraitMakeResult:
    """Write the results best first (`00000-<template>-<seed>.png` + `.yaml`), each with its recipe."""
    from lorastudio.generate.infotext import format_infotext, save_png

    folder = out_dir or ws.outputs / "portraits" / dt.date.today().isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    start = 1 + max((int(p.name.split("-")[0]) for p in folder.glob("*.png") if p.name.split("-")[0].isdigit()), default=-1)
    ranked = sorted(made, key=lambda m: -(_overall(m[3]) if _overall(m[3]) is not None else float("-inf")))
    result = PortraitMakeResult()
    for rank, (template, seed, image, faces) in enumerate(ranked):
        score = _overall(faces)
        stem = f"{start + rank:05d}-{template.path.stem}-{seed}"
        recipe = _recipe(cfg, template, seed, model_name, faces, score)
        infotext = format_infotext(faces[0]["prompt"], cfg.negative_prompt, _infotext_params(cfg, template, seed, model_name, faces, score))
        recipe["infotext"] = infotext
        text = yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False)
        png = save_png(image, folder / f"{stem}.png", infotext, {RECIPE_KEY: text})
        recipe_path = folder / f"{stem}.yaml"
        recipe_path.write_text(text, encoding="utf-8")
        result.images.append(PortraitImage(png, recipe_path, template.path.stem, seed, score, faces))
    return result


def _recipe(cfg, template: _Template, seed: int, model_name: str, faces, score) -> dict[str, Any]:
    request = cfg.model_dump()
    request.update(templates=[template.ref], count=1, seed=seed, model=model_name)
    return {
        "lorastudio": __version__,
        "kind": "portrait-make",
        "request": request,
        "template": {
            "name": template.path.stem,
            "path": str(template.path),
            "sha256": _sha256(template.path),
            "width": template.image.width,
            "height": template.image.height,
        },
        "faces": faces,
        "score": score,
    }


def _infotext_params(cfg, template: _Template, seed: int, model_name: str, faces, score) -> dict[str, Any]:
    return {
        "Steps": cfg.steps,
        "Sampler": cfg.sampler,
        "CFG scale": cfg.cfg_scale,
        "Seed": seed,
        "Size": f"{template.image.width}x{template.image.height}",
        "Model": model_name,
        "Denoising strength": cfg.first_strength,
        "Portrait template": template.path.stem,
        "Lora hashes": ", ".join(dict.fromkeys(f"{f['lora']}: {f['lora_hash']}" for f in faces)),
        "Portrait faces": ", ".join(f"{f['face']}={f['person']}" for f in faces),
        "Portrait second strength": cfg.second_strength,
        "Portrait skin retouch": cfg.skin_retouch_strength if cfg.skin_retouch else None,
        "Portrait ControlNets": ", ".join(
            f"{kind}={getattr(cfg, kind)}" for kind in CONTROL_KINDS if getattr(cfg, kind) != "none"
        ) or None,
        "Portrait score": score,
    }


# --- recipes ---------------------------------------------------------------------------------


def config_from_portrait_recipe(path: str | Path) -> PortraitMakeConfig:
    """The request that made a portrait (its `.yaml`, or the PNG carrying it): same pixels again.

    A template whose file changed since is refused: the same recipe would paint another photo.
    """
    from PIL import Image

    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFoundError(f"{path}: no such recipe; give a portrait's .yaml or .png.")
    if path.suffix.lower() == ".png":
        with Image.open(path) as image:
            text = image.text.get(RECIPE_KEY) if hasattr(image, "text") else None
        if not text:
            raise LorastudioError(f"{path}: carries no portrait recipe; give a PNG made by `lorastudio portrait make`.")
    else:
        text = path.read_text(encoding="utf-8")
    try:
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LorastudioError(f"{path}: not a YAML recipe ({str(exc).splitlines()[0]}).") from None
    if not isinstance(recipe, dict) or recipe.get("kind") != "portrait-make":
        raise LorastudioError(f"{path}: not a portrait recipe (kind: portrait-make); for an image's recipe use `generate --recipe`.")
    template = Path(recipe["template"]["path"])
    if not template.is_file():
        raise NotFoundError(f"{path}: its template {template} is gone; put it back to remake the portrait.")
    if _sha256(template) != recipe["template"]["sha256"]:
        raise LorastudioError(f"{path}: template {template} changed since the portrait was made; the recipe needs the same photo.")
    request = dict(recipe["request"])
    request.setdefault("skin_retouch", False)  # a portrait made before the switch was not retouched
    return PortraitMakeConfig.model_validate(request)


# --- the job kind ------------------------------------------------------------------------------


def portrait_make_handler(ctx: JobContext) -> dict[str, Any]:
    """payload: `config` (a PortraitMakeConfig). Portraits go to `outputs/<job id>/`, best first."""
    from lorastudio.service.job_steps import StepReporter, model_cache_of, names_policy_of, publish_artifacts

    cfg = PortraitMakeConfig.model_validate(ctx.payload.get("config") or {})
    if cfg.device is None and ctx.device:
        cfg = cfg.model_copy(update={"device": ctx.device})
    reporter = StepReporter(ctx)
    result = make_portraits(
        ctx.workspace, cfg, model_cache_of(ctx), reporter.progress, reporter.should_stop,
        out_dir=ctx.artifacts_dir, names=names_policy_of(ctx),
    )  # fmt: skip
    for image in result.images:
        ctx.emit("image", {"name": image.path.name, "seed": image.seed, "score": image.score})
    if reporter.stopped is not None:
        raise reporter.stopped
    publish_artifacts(ctx, ctx.artifacts_dir)
    return {
        "images": [i.path.name for i in result.images],
        "templates": [i.template for i in result.images],
        "seeds": [i.seed for i in result.images],
        "scores": [i.score for i in result.images],
        "faces": [i.faces for i in result.images],
    }


def submit_portrait_make(studio: Any, cfg: PortraitMakeConfig, extras: dict[str, Any], **who: Any) -> Job:
    """Queue a portrait-make job; the templates are looked up now (a typo fails the request, not the job)."""
    for ref in cfg.templates:
        find_template(studio.workspace, ref, allow_paths=False)
    return studio.submit("portrait-make", {"config": cfg.model_dump()}, **who)
