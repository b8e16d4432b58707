"""Generation as a service: request in, PNGs with infotext + YAML recipes out.

Resolves `<lora:...>` tags and embedding names against the workspace, applies LoRAs for
this request only, runs the sampling loop and writes every image with its full recipe.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lorastudio import __version__
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.generate.config import GenerateConfig
from lorastudio.service.library import Library
from lorastudio.service.lora_cache import parsed_lora_files
from lorastudio.service.model_cache import ModelCache
from lorastudio.service.names import STRICT, NamePolicy, find_lora, find_model, find_vae
from lorastudio.service.recipe_inputs import kept_request
from lorastudio.service.recipe_paths import portable_request
from lorastudio.service.recipes import Replay, config_from_recipe  # the latter re-exported (callers)
from lorastudio.service.workspace import Workspace

if TYPE_CHECKING:
    from lorastudio.generate.control import ControlStack
    from lorastudio.models.families import Family

logger = logging.getLogger(__name__)

__all__ = [
    "GenerationResult",
    "run_generation",
    "config_from_recipe",
    "find_lora_file",
    "find_embedding_files",
    "generation_notes",
    "RESTORE_FACES_NOTE",
    "check_hires_prompt_loras",
]

# A1111's `restore_faces: true` is taken and not done (this studio has no face-restoration model):
# the request's notes say so, once.
RESTORE_FACES_NOTE = "Restore faces is not available here; the image is not face-restored"

@dataclass
class OutputImage:
    path: Path
    recipe_path: Path
    seed: int
    infotext: str


@dataclass
class GenerationResult:
    images: list[OutputImage]
    model: str
    model_hash: str
    loras: list[dict[str, Any]] = field(default_factory=list)
    control_maps: list[Path] = field(default_factory=list)  # one per ControlNet unit (detected_maps/)
    missing_loras: list[str] = field(default_factory=list)  # `<lora:NAME>` tags skipped (missing_loras="skip")
    inpainting_model: bool = False  # a 9-channel UNet (mask and masked picture in every step)
    # prompt words whose embedding file could not be used (unreadable, another family): plain words, as A1111
    skipped_embeddings: list[str] = field(default_factory=list)
    # what the prompts say that A1111 reads otherwise (HCP-Diffusion's `{word:1.2}`: braces are text)
    prompt_notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "images": [str(i.path) for i in self.images],
            "recipes": [str(i.recipe_path) for i in self.images],
            "seeds": [i.seed for i in self.images],
            "model": self.model,
            "model_hash": self.model_hash,
            "loras": self.loras,
            "control_maps": [str(p) for p in self.control_maps],
            "missing_loras": self.missing_loras,
            "skipped_embeddings": self.skipped_embeddings,
            "notes": generation_notes(self),
        }


def generation_notes(result: GenerationResult) -> list[str]:
    """What a request asked for and was made without, in A1111's console words: a missing LoRA, an
    embedding word read as a plain word (its file unreadable, or made for another model family); and
    another tool's prompt syntax A1111 reads as text (HCP-Diffusion's `{word:1.2}`)."""
    notes = []
    if result.missing_loras:
        notes.append(f"Lora not found: {', '.join(result.missing_loras)}")
    if result.skipped_embeddings:
        notes.append(
            f"Textual inversion embeddings skipped({len(result.skipped_embeddings)}): "
            f"{', '.join(result.skipped_embeddings)} (another model family or unreadable: read as plain words)"
        )
    return notes + result.prompt_notes


def check_hires_prompt_loras(cfg: GenerateConfig, nets: list) -> None:
    """A hires prompt's `<lora:…>` tags must be the prompt's: the LoRAs are applied once for the whole
    request here (A1111 switches to the hires prompt's own for its second pass)."""
    from lorastudio.generate.prompt_parser import extract_extra_networks

    if not cfg.hires_on or not cfg.hires_prompt:
        return

    def tags(networks: list) -> list[tuple]:
        return sorted((n.name, n.te_weight, n.unet_weight) for n in networks if n.kind in {"lora", "lyco"})

    if tags(extract_extra_networks(cfg.hires_prompt)[1]) != tags(nets):
        raise LorastudioError(
            "hires prompt: its <lora:…> tags differ from the prompt's; the hires pass runs with the prompt's "
            "LoRAs here, so give the hires prompt the same tags and weights (or leave it empty)."
        )


def find_lora_file(ws: Workspace, name: str, names: NamePolicy = STRICT) -> Path:
    """The file a `<lora:NAME>` tag names: a plain name in loras/ (see `service.names`)."""
    return find_lora(ws, name, names)


def _lora_files_of(ws: Workspace, nets: list, lora_files: dict[str, Path] | None, names: NamePolicy, skip_missing: bool):
    """(the tags that name a LoRA, their files, the names of those that name none). A missing name
    is refused, or with `skip_missing` left out as A1111 does ("Lora not found"), for its API clients."""
    found, paths, missing = [], [], []
    for net in nets:
        try:
            path = (lora_files or {}).get(net.name) or find_lora_file(ws, net.name, names)
        except NotFoundError:
            if not skip_missing:
                raise
            missing.append(net.name)
            continue
        found.append(net)
        paths.append(path)
    return found, paths, missing


def _encoder_widths(model) -> list[int]:
    return [int(encoder.get_input_embeddings().weight.shape[-1]) for encoder in model.text_encoders]


def _embedding_fits(embedding, model) -> bool:
    """One vector set per text encoder, each as wide as that encoder's token embeddings."""
    if len(embedding.vectors) != len(model.text_encoders):
        return False
    return all(
        vectors.shape[-1] == encoder.get_input_embeddings().weight.shape[-1]
        for vectors, encoder in zip(embedding.vectors, model.text_encoders, strict=True)
    )


def find_embedding_files(ws: Workspace, texts: list[str]) -> dict[str, Path]:
    """Embeddings whose name appears as a word in any of the texts: the file stem, or the name a
    picture embedding stores (A1111); the same rules `GET /api/v1/embeddings` lists by."""
    from lorastudio.service.embedding_files import prompt_embedding_files

    return prompt_embedding_files(ws.embeddings, texts)


def _next_output_paths(folder: Path, seed: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name.split("-")[0]) for p in folder.glob("*.png") if p.name.split("-")[0].isdigit()]
    n = max(numbers, default=-1) + 1
    stem = f"{n:05d}-{seed}"
    return folder / f"{stem}.png", folder / f"{stem}.yaml"


def _infotext_params(
    cfg: GenerateConfig,
    plan,
    model,
    seed: int,
    lora_hashes: list[tuple[str, str]],
    ti_hashes: list[tuple[str, str]],
    subseed: int | None = None,
) -> dict[str, Any]:
    """The image's infotext keys: the request through `A1111_FIELDS`, plus what was resolved."""
    from lorastudio.generate.a1111_fields import InfotextFacts, infotext_params

    facts = InfotextFacts.of_image(plan, model, seed, subseed=subseed, lora_hashes=lora_hashes, ti_hashes=ti_hashes)
    return infotext_params(cfg, facts)


def with_family_defaults(cfg: GenerateConfig, family: Family) -> GenerateConfig:
    """The family's guidance and sampler where the request did not set them (Kolors: 5, Euler).

    They become part of the request, so the infotext and the recipe reproduce the image.
    Families whose defaults are GenerateConfig's own get the request back unchanged.
    """
    defaults = {"cfg_scale": family.default_guidance, "sampler": family.default_sampler}
    update = {
        name: value
        for name, value in defaults.items()
        if name not in cfg.model_fields_set and getattr(cfg, name) != value
    }
    return cfg.model_copy(update=update) if update else cfg


def check_model_names(ws: Workspace, cfg: GenerateConfig, names: NamePolicy) -> None:
    """The request's model and VAE exist (nothing is loaded or built): `--model Kolors` without a Kolors
    model answered with the first `<lora:…>` of its prompts instead."""
    find_model(ws, cfg.model, names, build=False)
    if cfg.vae:
        find_vae(ws, cfg.vae, names)


def run_generation(
    ws: Workspace,
    cfg: GenerateConfig,
    cache: ModelCache | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    out_dir: Path | None = None,
    preview: Callable[[Any], None] | None = None,
    preview_every: int = 0,
    lora_files: dict[str, Path] | None = None,
    names: NamePolicy = STRICT,
    add_to_library: bool = True,
    missing_loras: str = "refuse",
    replay: Replay | None = None,
) -> GenerationResult:
    """Generate every image of the request and write PNG + recipe for each.

    `lora_files` maps `<lora:NAME>` names to files outside `loras/` (a comparison grid's
    checkpoints of a training run); other names are looked up in the library. The trigger
    embeddings bundled in those files win over same-name files in `embeddings/`: a
    checkpoint's trigger belongs to that checkpoint. `names` reads model, VAE and LoRA
    names: strict (the default, what a server uses) or lenient for the CLI's local paths.
    `add_to_library=False` keeps intermediate images (a portrait's inpaint passes) out of the
    outputs library. `missing_loras="skip"` generates without a `<lora:NAME>` no file answers to,
    as A1111 does for its API clients (the result lists them); the default refuses the request.
    `replay` (`read_recipe`'s) remakes a YAML recipe's image exactly: its batch made again and only
    its image kept, its preprocessors' seed, its LoRA files from outside loras/.
    """
    from lorastudio.adapters import check_lora_family, load_embedding
    from lorastudio.adapters.embeddings import split_joined_vectors
    from lorastudio.adapters.patch import lingering_loras
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.infotext import format_infotext, save_png
    from lorastudio.generate.pipeline import build_plan, generate_images, open_request_images
    from lorastudio.generate.prompt_parser import extract_extra_networks
    from lorastudio.models.checkpoint import file_sha256
    from lorastudio.service.control import check_units, control_infotext, control_stack
    from lorastudio.service.upscalers import check_hires_upscaler, hires_model_upscaler

    replay = replay or Replay()
    lora_files = {**replay.lora_files, **(lora_files or {})} or None
    open_request_images(cfg)  # a bad init image or mask fails before any model is loaded
    check_hires_upscaler(ws, cfg, allow_paths=not names.strict)  # an unknown upscaler too
    units = check_units(ws, cfg, names)  # ControlNet units too: their files, images, masks and preprocessors
    cache = cache or ModelCache(ws, names=names)
    check_model_names(ws, cfg, cache.names)  # a missing model is the first thing to say, before its LoRAs
    prompt_notes = _syntax_notes(cfg)
    prompt, networks = extract_extra_networks(cfg.prompt)
    negative, _ = extract_extra_networks(cfg.negative_prompt)
    nets = [net for net in networks if net.kind in {"lora", "lyco"}]
    check_hires_prompt_loras(cfg, nets)
    # A misspelt <lora:name> fails before the model loads (seconds to minutes for a real checkpoint).
    nets, paths, missing = _lora_files_of(ws, nets, lora_files, names, skip_missing=missing_loras == "skip")
    if missing:
        logger.warning("Lora not found: %s (generating without it, as A1111)", ", ".join(missing))
    model = cache.get(cfg.model, cfg.device, cfg.vae)
    cfg = with_family_defaults(cfg, model.family)
    if cfg.clip_skip > 1 and not model.family.supports_clip_skip:
        # Kolors' ChatGLM has no clip skip: ignored, and the infotext says what was used.
        cfg = cfg.model_copy(update={"clip_skip": 1})
    loras, lora_info = [], []
    # A known file is a stat and a lookup; new ones are read two at a time.
    for net, path, parsed in zip(nets, paths, parsed_lora_files().load_many(paths), strict=True):
        check_lora_family(parsed.lora, model.family, name=str(path))
        loras.append((parsed.lora, net.te_weight, net.unet_weight, net.dyn_dim))
        lora_info.append(
            {
                "name": net.name,
                "te_weight": net.te_weight,
                "unet_weight": net.unet_weight,
                "hash": parsed.short_hash,
                "path": str(path),
            }
        )
    embeddings = {}
    ti_hashes = []
    # Textual-inversion files hold CLIP vectors: prompts for ChatGLM (Kolors) use none, and say so.
    # a recipe's files found by their recorded hashes win
    found = find_embedding_files(ws, [prompt, negative, cfg.hires_prompt, cfg.hires_negative_prompt]) | replay.embedding_files
    if found and not model.family.embedding_keys:
        logger.warning("%s cannot use textual-inversion embeddings; %s read as plain words",
                       model.family.label, ", ".join(repr(name) for name in found))  # fmt: skip
        found = {}
    pinned = {
        name
        for (lora, *_), info in zip(loras, lora_info, strict=True)
        if info["name"] in (lora_files or {})
        for name in lora.embeddings
    } | _bundles_over_other_runs(found, loras)
    skipped = []
    for name, path in found.items():
        if name in pinned:
            continue
        try:
            # HCP-Diffusion's SDXL files hold CLIP-L and CLIP-G side by side in one matrix
            embedding = split_joined_vectors(load_embedding(path), _encoder_widths(model))
        except LorastudioError as exc:
            # As A1111: a file that cannot be read (the listing shows why) leaves its word a word.
            logger.warning("%s; %r is read as a plain word", exc, name)
            skipped.append(name)
            continue
        if not _embedding_fits(embedding, model):
            # As A1111: an embedding made for another family is skipped, its word stays a word.
            logger.warning("%s: an embedding for another model family; %r is read as a plain word", path.name, name)
            skipped.append(name)
            continue
        embeddings[name] = [v.to(model.device, model.dtype) for v in embedding.vectors]
        ti_hashes.append((name, file_sha256(path)[:12]))  # A1111's: the whole file's SHA-256
    _add_bundled_embeddings(embeddings, ti_hashes, loras, lora_info, model)
    plan = build_plan(cfg, model, prompt, negative)
    plan.hires_upscaler = hires_model_upscaler(ws, cfg, model.device, model.dtype, allow_paths=not names.strict)
    control_seed = replay.control_seed if replay.control_seed is not None else (plan.seeds or [0])[0]
    plan.extra["control"], control_rows = control_stack(ws, cfg, model, plan, units, cache, control_seed)
    encoder = PromptEncoder(model, clip_skip=cfg.clip_skip, embeddings=embeddings)
    # The stack stays on the model for the next request (the same stack again costs nothing);
    # a request without LoRAs gets the original weights back.
    with lingering_loras(model.components, loras, in_place="compiled" in model.extra):
        generated = generate_images(model, cfg, plan, encoder, progress, should_stop, preview, preview_every)
    if replay.position is not None:  # a recipe's image of a batch: the batch was remade for it
        generated = [item for item in generated if item.index == replay.position]
    used_ti = [(n, h) for n, h in ti_hashes if n in encoder.used_embeddings]
    folder = out_dir or ws.outputs / dt.date.today().isoformat()
    # weights named by a local path recorded so the recipe finds them from any folder (`service.recipe_paths`),
    # uploaded pictures kept beside the recipes (nothing copied for a request stopped before an image)
    request, tag_names = portable_request(ws, cfg.model_dump(), names)
    request = kept_request(ws, request, folder) if generated else request
    pinned_files = {d["name"]: str(Path(d["path"]).absolute()) for d in lora_info if d["name"] in (lora_files or {})}
    pinned_embeddings = {n: str(Path(p).absolute()) for n, p in replay.embedding_files.items() if n in dict(used_ti)}
    results = []
    library = Library(ws)
    for item in generated:
        subseed = plan.subseeds[item.index] if plan.subseeds else None
        params = _infotext_params(
            cfg, plan, model, item.seed, [(d["name"], d["hash"]) for d in lora_info], used_ti, subseed
        )
        params.update(control_infotext(cfg, control_rows))
        infotext = format_infotext(cfg.prompt, cfg.negative_prompt, params)
        png_path, recipe_path = _next_output_paths(folder, item.seed)
        recipe = {
            "lorastudio": __version__,
            "request": request,
            "image": {"seed": item.seed, "index": item.index, "width": plan.width, "height": plan.height,
                      "device": str(model.device)},  # where it was made, for the record (not a requirement)
            "model": {
                "name": model.name,
                "family": model.family.name,
                "hash": model.short_hash,
                "sha256": model.sha256,
                "source": model.source,
            },
            "loras": [{**d, "name": tag_names.get(d["name"], d["name"])} for d in lora_info],
            "embeddings": [{"name": n, "hash": h} for n, h in used_ti],
            "infotext": infotext,
        }
        if subseed is not None:
            recipe["image"]["subseed"] = subseed
        if control_rows:  # which files the units used (title with hash); recipes without units unchanged
            recipe["controlnets"] = control_rows
            recipe["image"]["control_seed"] = control_seed
        if pinned_files:  # LoRAs from outside loras/ (a grid's checkpoints): the same files again
            recipe["lora_files"] = pinned_files
        if pinned_embeddings:  # a recipe's embeddings found by their recorded hashes: the same files again
            recipe["embedding_files"] = pinned_embeddings
        save_png(item.image, png_path, infotext)
        tmp = recipe_path.with_suffix(".yaml.tmp")
        tmp.write_text(yaml.safe_dump(recipe, allow_unicode=True, sort_keys=False), encoding="utf-8")
        tmp.replace(recipe_path)
        if add_to_library:
            library.add_output(png_path, item.seed, model.name, model.short_hash, cfg.prompt, recipe)
        results.append(OutputImage(png_path, recipe_path, item.seed, infotext))
    maps = save_control_maps(plan.extra["control"], folder, results[0].path.stem) if results else []
    inpainting = getattr(model.unet.config, "in_channels", 4) == 9
    return GenerationResult(
        results, model.name, model.short_hash, lora_info, maps, missing, inpainting, skipped, prompt_notes
    )


def _syntax_notes(cfg: GenerateConfig) -> list[str]:
    """HCP-Diffusion's `{word:1.2}` in the prompts: read as A1111 reads it (braces are text, the
    weight does nothing), and said once (logged, as A1111's console lines, and in the result's notes)."""
    from lorastudio.generate.hcp_syntax import hcp_weight_note

    note = hcp_weight_note([cfg.prompt, cfg.negative_prompt, cfg.hires_prompt, cfg.hires_negative_prompt])
    if note:
        logger.warning("%s", note)
    return [note] if note else []


def save_control_maps(stack: ControlStack | None, folder: Path, stem: str) -> list[Path]:
    """Each unit's control map (after its preprocessor) as `detected_maps/<stem>-<unit>.png`, what the
    A1111 extension saves and appends to an API answer, so a client sees what the units followed."""
    if stack is None:
        return []
    target = folder / "detected_maps"
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, unit in enumerate(stack.units):
        path = target / f"{stem}-{index}.png"
        unit.image.convert("RGB").save(path)
        paths.append(path)
    return paths


def _bundles_over_other_runs(found: dict[str, Path], loras: list) -> set[str]:
    """Words a prompt's LoRA bundles whose library file another training run published: the LoRA's
    own wins there (two runs of one trigger each keep theirs). A file the LoRA's own run published,
    or one put there by hand, wins as in A1111."""
    from lorastudio.service.embeddings import embedding_owner

    words = set()
    for lora, *_ in loras:
        run = lora.metadata.get("ss_output_name")
        for word in lora.embeddings:
            owner = embedding_owner(found[word]) if run and word in found else None
            if owner is not None and owner != run:
                words.add(word)
    return words


def _add_bundled_embeddings(embeddings: dict, ti_hashes: list, loras: list, lora_info: list, model) -> None:
    """Trigger embeddings bundled in the prompt's LoRAs (`bundle_emb.*`), as A1111 loads them.

    A standalone embedding of the same name wins, as in A1111 ("skip bundle embedding"), unless
    another training run published it (`_bundles_over_other_runs`).
    """
    for (lora, *_), info in zip(loras, lora_info, strict=True):
        for name, vectors in lora.embeddings.items():
            if name in embeddings or len(vectors) != len(model.text_encoders):
                continue
            embeddings[name] = [v.to(model.device, model.dtype) for v in vectors]
            ti_hashes.append((name, info["hash"]))


@dataclass
class SeriesResult(GenerationResult):
    contact_sheet: Path | None = None

    def as_json(self) -> dict[str, Any]:
        data = super().as_json()
        data["contact_sheet"] = str(self.contact_sheet) if self.contact_sheet else None
        return data


def run_series(
    ws: Workspace,
    base: dict[str, Any],
    prompts: str | Path | list[dict[str, Any]],
    seed_policy: str = "fixed",
    progress: Callable[[int, int], None] | None = None,
    out_dir: Path | None = None,
    names: NamePolicy = STRICT,
    cache: ModelCache | None = None,
    should_stop: Callable[[], bool] | None = None,
    preview: Callable[[Any], None] | None = None,
    sheet_name: str | None = None,
    styles: list[str] | None = None,
) -> SeriesResult:
    """Render one image set per prompt (a prompt file or its entries) with one seed policy, plus a
    contact sheet. Progress runs over the whole series; a stop keeps the pictures made so far.
    `styles` (A1111 prompt styles) are merged into every entry's prompts."""
    from lorastudio.config import load_config
    from lorastudio.generate.pipeline import resolve_seed
    from lorastudio.generate.series import contact_sheet, read_prompt_file, series_requests

    items = prompts if isinstance(prompts, list) else read_prompt_file(prompts)
    if styles:
        from lorastudio.service.styles import styled_entries

        items = styled_entries(ws, items, list(styles), str(base.get("negative_prompt") or ""))
    if not items:
        raise LorastudioError(f"{'the prompt list' if isinstance(prompts, list) else prompts}: contains no prompts.")
    seed = resolve_seed(int(base.get("seed", -1)))
    cache = cache or ModelCache(ws, names=names)
    folder = out_dir or ws.outputs / dt.date.today().isoformat()
    images: list[OutputImage] = []
    labels: list[str] = []
    notes: list[str] = []
    first = None
    for i, request in enumerate(series_requests(base, items, seed, seed_policy)):
        cfg = load_config(GenerateConfig, None, request)

        def overall(done: int, total: int, i: int = i) -> None:
            progress(i * total + done, len(items) * total)

        result = run_generation(
            ws, cfg, cache, overall if progress else None, should_stop, out_dir=folder, preview=preview, names=names
        )
        first = first or result
        notes += [note for note in result.prompt_notes if note not in notes]
        images += result.images
        labels += [f"{i + 1}: {cfg.prompt}"] * len(result.images)
        if should_stop is not None and should_stop():
            break
    name = sheet_name or f"contact-sheet-{Path(prompts).stem if not isinstance(prompts, list) else 'series'}.png"
    sheet = contact_sheet([img.path for img in images], labels, folder / name) if images else None
    return SeriesResult(
        images, first.model, first.model_hash, first.loras, prompt_notes=notes, contact_sheet=sheet
    )
