"""HCP-Diffusion's inference configs as recipes (`lorastudio generate --recipe FILE`).

Two kinds of file are read: the `N-SEED-info.yaml` HCP's visualizer writes beside each image (the whole
config, `_base_` already merged, `${...}` interpolations as written, the image's `seed`) and the
`cfgs/infer/*.yaml` it ships (their `_base_` files looked for beside the file and in the folders above
it, as HCP reads them from its own folder). They are told apart by the name: an info file is named
after its image's number and seed, and its `seed` is that seed; it describes that one image (the run's
`num`/`bs` are kept in it as written), so it makes one, while a config keeps its `num` x `bs`. `${key}` and relative `${..key}` interpolations are resolved
as OmegaConf resolves them; HCP's own resolvers are not.

What maps: `prompt`/`neg_prompt` (HCP's `{word}`/`{word:1.2}` weights written as A1111's `(word)`/
`(word:1.2)`), `infer_args.width/height/guidance_scale/num_inference_steps`, `seed`, `num` x `bs` (count x
batch), `clip_skip` (HCP counts from 0), `pretrained_model` (a model of this workspace by name), the
`merge` groups' LoRAs (`exps/RUN/ckpts/unet-N` with `text_encoder-N`, found in loras/ by the names HCP
and `lorastudio lora import` give them) as `<lora:NAME:weight>` with their `alpha`, and the scheduler a
`new_components.scheduler._target_` names (diffusers' class -> A1111's sampler and schedule type).
Whatever cannot be mapped is one note each; values that change nothing here (output folders, `N_repeats`,
precision, offloading) are left out quietly.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.names import NamePolicy
from lorastudio.service.recipe_notes import RecipeNote
from lorastudio.service.workspace import Workspace

__all__ = ["hcp_request", "is_hcp_infer"]

# Keys only HCP-Diffusion's infer configs have (not its train configs, not our recipes).
_MARKS = ("infer_args", "neg_prompt", "N_repeats", "new_components", "pretrained_model", "merge", "emb_dir")
# Keys that change nothing about the picture here: where HCP writes, how long a prompt may be (A1111
# chunks any length), its precision and offloading; `exp_dir`/`model_steps`/`emb_dir` name the run's files.
_QUIET = frozenset({
    "_base_", "out_dir", "output_dir", "interface", "save", "save_cfg", "N_repeats", "fp16", "dtype", "amp",
    "offload", "vae_optimize", "encoder_attention_mask", "exp_dir", "model_steps", "emb_dir",
})  # fmt: skip
_MAPPED = frozenset({"prompt", "neg_prompt", "infer_args", "seed", "num", "bs", "clip_skip", "pretrained_model",
                     "merge", "new_components"})  # fmt: skip
_INFER_ARGS = {"width": "width", "height": "height", "guidance_scale": "cfg_scale", "num_inference_steps": "steps"}
# diffusers' scheduler classes as A1111's samplers (DPMSolverMultistepScheduler by its algorithm and order)
_SAMPLERS = {
    "EulerAncestralDiscreteScheduler": "Euler a", "EulerDiscreteScheduler": "Euler", "LMSDiscreteScheduler": "LMS",
    "HeunDiscreteScheduler": "Heun", "KDPM2DiscreteScheduler": "DPM2", "KDPM2AncestralDiscreteScheduler": "DPM2 a",
    "DPMSolverSDEScheduler": "DPM++ SDE", "DDIMScheduler": "DDIM", "PNDMScheduler": "PLMS",
    "UniPCMultistepScheduler": "UniPC", "LCMScheduler": "LCM",
}  # fmt: skip
_MULTISTEP = {("dpmsolver++", 2): "DPM++ 2M", ("sde-dpmsolver++", 2): "DPM++ 2M SDE", ("sde-dpmsolver++", 3): "DPM++ 3M SDE"}
_SCHEDULES = {"use_karras_sigmas": "Karras", "use_exponential_sigmas": "Exponential"}
# scheduler arguments with Stable Diffusion's own values, which A1111's samplers use too
_SD_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True}  # fmt: skip
_HALVES = ("unet-", "text_encoder-", "TE-")  # HCP's LoRA files: unet-N with text_encoder-N (older: TE-N)
_INTERPOLATION = re.compile(r"\$\{([^${}]*)\}")
# `N-SEED-info.yaml`: what HCP's DiskInterface writes beside its image N made with SEED
_IMAGE_INFO = re.compile(r"\d+-(\d+)-info\.ya?ml", re.IGNORECASE)


def is_hcp_infer(data: Any) -> bool:
    """Whether a YAML mapping is an HCP-Diffusion inference config (never one of our recipes)."""
    if not isinstance(data, dict) or "request" in data:
        return False
    marks = sum(key in data for key in _MARKS)
    return marks >= 2 or (marks == 1 and "_base_" in data)


class _Unresolved(Exception):
    pass


class _Config:
    """The merged config; `get` answers a dotted key's value with its interpolations resolved (one that
    cannot be is left out, None, with a note)."""

    def __init__(self, data: dict[str, Any], notes: list[RecipeNote]) -> None:
        self.data, self.notes = data, notes

    def get(self, key: str, default: Any = None) -> Any:
        path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        try:
            value = self._leaves(self._at(path), path)
        except KeyError:
            return default
        return default if value is None else value

    def _leaves(self, value: Any, here: tuple) -> Any:
        if isinstance(value, dict):
            return {k: self._leaves(v, (*here, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._leaves(v, (*here, i)) for i, v in enumerate(value)]
        failed: list[str] = []
        try:
            resolved = self._resolved(value, here, 0, failed)
        except _Unresolved:  # the whole value is one interpolation: left out
            failed, resolved = [str(value)], None
        if failed:
            key = ".".join(str(p) for p in here)
            kept = "left out" if resolved is None else "kept as written"
            self.notes.append(RecipeNote(
                "hcp_unresolved", {"key": key, "value": ", ".join(failed)},
                f"{key}: {', '.join(failed)} cannot be resolved here (an HCP-Diffusion resolver, or a key the"
                f" file lacks); {kept}.",
            ))  # fmt: skip
        return resolved

    def _at(self, path: tuple) -> Any:
        node: Any = self.data
        for part in path:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                raise KeyError(part)
        return node

    def _target(self, here: tuple, ref: str) -> tuple:
        """The path `${ref}` names from the value at `here` (OmegaConf: each leading dot one level up)."""
        ref = ref.strip()
        dots = len(ref) - len(ref.lstrip("."))
        if not ref[dots:] or ":" in ref or dots > len(here):  # `${times:512,704}`: a resolver
            raise _Unresolved(ref)
        base = here[: len(here) - dots] if dots else ()
        return base + tuple(int(p) if p.isdigit() else p for p in ref[dots:].split("."))

    def _resolved(self, value: Any, here: tuple, depth: int, failed: list[str]) -> Any:
        """`value` with its `${...}` resolved: one that is the whole value keeps the type it names (`alpha:
        ${....alpha}` is a number) or raises `_Unresolved`; one inside a text that cannot be is kept as
        written and listed in `failed`."""
        if not isinstance(value, str) or "${" not in value:
            return value
        if depth > 16:
            raise _Unresolved(value)

        def lookup(ref: str) -> Any:
            target = self._target(here, ref)
            try:
                found = self._at(target)
            except KeyError:
                raise _Unresolved(ref) from None
            if isinstance(found, dict | list):
                raise _Unresolved(ref)
            inner: list[str] = []
            found = self._resolved(found, target, depth + 1, inner)
            if inner:
                raise _Unresolved(ref)
            return found

        whole = _INTERPOLATION.fullmatch(value)
        if whole:
            return lookup(whole.group(1))

        def substitute(match: re.Match) -> str:
            try:
                return str(lookup(match.group(1)))
            except _Unresolved:
                failed.append(match.group(0))
                return match.group(0)

        return _INTERPOLATION.sub(substitute, value)


def _shown(value: Any) -> str:
    """A value on one line: a mapping's plain entries, `key=value` (at most 160 characters)."""
    if isinstance(value, dict):
        text = ", ".join(f"{k}={v}" for k, v in value.items() if not isinstance(v, dict | list)) or "..."
    elif isinstance(value, list):
        text = ", ".join(_shown(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def _note(notes: list[RecipeNote], key: str, value: Any, fix: str = "") -> None:
    """One line for a setting that is left out (`fix`: what to do instead, after a semicolon)."""
    value = _shown(value)
    notes.append(RecipeNote(
        "hcp_not_mapped", {"key": key, "value": value},
        f"HCP-Diffusion's {key} ({value}) has no equivalent here; it is left out{f' ({fix})' if fix else ''}.",
    ))  # fmt: skip


def _read(path: Path) -> Any:
    from lorastudio.config import read_text_file

    try:
        return yaml.safe_load(read_text_file(path, "recipe")) or {}
    except yaml.YAMLError as exc:
        raise LorastudioError(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); fix the syntax.") from None


def _merged(data: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """`data` over `base`, mappings merged key by key (OmegaConf.merge, as HCP's `_base_`)."""
    out = dict(base)
    for key, value in data.items():
        out[key] = _merged(value, out[key]) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _with_bases(data: dict[str, Any], path: Path, notes: list[RecipeNote], seen: frozenset = frozenset()) -> dict:
    """`data` over its `_base_` configs, found beside `path` or in a folder above it (HCP reads them
    from its own folder); one note for each not found."""
    bases = data.get("_base_") or []
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        found = next((f for f in (d / str(base) for d in (path.parent, *path.parents)) if f.is_file()), None)
        if found is None or found.resolve() in seen:
            notes.append(RecipeNote(
                "hcp_base_missing", {"base": str(base)},
                f"its _base_ config {base} is not found beside the file or in a folder above it; the values it"
                " holds are left out.",
            ))  # fmt: skip
            continue
        loaded = _read(found)
        if isinstance(loaded, dict):
            merged = _merged(_with_bases(loaded, found, notes, seen | {found.resolve()}), merged)
    return _merged(data, merged)


def _number(cfg: _Config, key: str, path: Path, whole: bool = True) -> int | float | None:
    value = cfg.get(key)
    if value is None:
        return None
    kind = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "a whole number" if whole else "a number"
        raise LorastudioError(f"{path}: {key}: {value!r} is not {what}; edit the config.")
    return value


def hcp_request(
    data: dict[str, Any], path: Path, ws: Workspace, model: str | None, given: set[str], policy: NamePolicy
) -> tuple[dict[str, Any], list[RecipeNote]]:
    """An HCP-Diffusion infer config's request and a note for each thing it cannot carry over.
    `model`: the model to use where the config's `pretrained_model` is not in this workspace."""
    from lorastudio.generate.hcp_syntax import a1111_from_hcp

    notes: list[RecipeNote] = []
    cfg = _Config(_with_bases(data, path, notes), notes)
    request: dict[str, Any] = {}
    texts = []
    for key, field in (("prompt", "prompt"), ("neg_prompt", "negative_prompt")):
        text = cfg.get(key)
        if isinstance(text, list):  # several prompts: the first
            for index, other in enumerate(text[1:], 1):
                _note(notes, f"{key}.{index}", other)
            text = text[0] if text else ""
        texts.append(str(text or ""))
        request[field] = a1111_from_hcp(texts[-1])
    if any(a != b for a, b in zip(texts, (request["prompt"], request["negative_prompt"]), strict=True)):
        escaped = " (its own parentheses and brackets, plain text to HCP, as \\( \\) \\[ \\])" if any(
            char in text for text in texts for char in "()[]"
        ) else ""
        notes.append(RecipeNote(
            "hcp_prompt_weights", {},
            f"HCP-Diffusion's {{word}} and {{word:1.2}} weights are written as A1111's (word) and (word:1.2){escaped}.",
        ))  # fmt: skip
    infer_args = cfg.get("infer_args") or {}
    for key in infer_args if isinstance(infer_args, dict) else ():
        if key in _INFER_ARGS:
            request[_INFER_ARGS[key]] = _number(cfg, f"infer_args.{key}", path, whole=key != "guidance_scale")
        elif infer_args[key] is not None:
            _note(notes, f"infer_args.{key}", infer_args[key])
    for key, field in (("seed", "seed"), ("num", "count"), ("bs", "batch_size")):
        value = _number(cfg, key, path)
        if value is not None:
            request[field] = value
    if _describes_one_image(path, request.get("seed")):
        # HCP seeds each image of its run seed, seed + 1, ... and writes each one's seed into its own info
        # file beside the run's num and bs: that image is the one made from its seed alone
        request["count"], request["batch_size"] = 1, 1
    clip_skip = _number(cfg, "clip_skip", path)
    if clip_skip is not None:
        request["clip_skip"] = clip_skip + 1  # HCP's 0 is the last layer, A1111's 1
    request["model"] = _model(ws, cfg.get("pretrained_model"), model, path, notes, policy)
    _scheduler(cfg, request, notes, given)
    if "prompt" not in given:
        _trigger_notes(ws, cfg, request["prompt"], notes)
        request["prompt"] += "".join(f" {tag}" for tag in _lora_tags(ws, cfg, notes, policy))
    for key, value in cfg.data.items():
        if key not in _QUIET and key not in _MAPPED and value is not None:
            _note(notes, key, value)
    notes.append(RecipeNote(
        "hcp_alike", {},
        "HCP-Diffusion samples through diffusers and weights prompts its own way; the picture will be alike,"
        " not the same.",
    ))  # fmt: skip
    once = list({(note.key, note.text): note for note in notes}.values())  # a value read twice: one note
    return {k: v for k, v in request.items() if v is not None}, once


def _describes_one_image(path: Path, seed: Any) -> bool:
    """Whether `path` is the info file HCP's visualizer wrote beside one image (`N-SEED-info.yaml` whose
    `seed` is SEED), rather than a config for a run."""
    named = _IMAGE_INFO.fullmatch(path.name)
    return named is not None and isinstance(seed, int) and int(named.group(1)) == seed


def _model(
    ws: Workspace, named: Any, fallback: str | None, path: Path, notes: list[RecipeNote], policy: NamePolicy
) -> str | None:
    """The workspace's model for `pretrained_model` (a hub id or folder: found by its last part too)."""
    from lorastudio.service.names import find_model

    named = str(named or "").strip()
    parts = PurePosixPath(named.replace("\\", "/")).parts if named else ()
    stems = [Path(p).stem for p in parts[-1:] if Path(p).suffix.lower() in (".safetensors", ".ckpt")]
    for ref in dict.fromkeys(r for r in (named, *parts[-1:], *stems) if r):
        try:
            if find_model(ws, ref, policy, build=False).path is not None:
                return ref
        except LorastudioError:
            continue
    if fallback:
        if named:
            notes.append(RecipeNote(
                "model_kept", {"named": named, "model": fallback},
                f"the config's model {named} is not in this workspace; generating with {fallback}.",
            ))  # fmt: skip
        return fallback
    if not named:
        raise NotFoundError(f"{path}: names no pretrained_model; pass --model NAME to pick one.")
    raise NotFoundError(
        f"{path}: pretrained_model {named!r} is not in this workspace; import it with `lorastudio models import`,"
        " or pass --model NAME to use another."
    )


def _scheduler(cfg: _Config, request: dict[str, Any], notes: list[RecipeNote], given: set[str]) -> None:
    """`new_components.scheduler` as A1111's sampler and schedule type; other components one note each
    (none for what the caller gives anew: `--sampler`, `--vae`)."""
    components = cfg.get("new_components") or {}
    components = components if isinstance(components, dict) else {}
    for key, value in components.items():
        if key != "scheduler" and value is not None and not (key == "vae" and "vae" in given):
            fix = "pass --vae NAME with that VAE from models/" if key == "vae" else ""
            _note(notes, f"new_components.{key}", value, fix)
    scheduler = components.get("scheduler")
    if "sampler" in given:
        return
    if not isinstance(scheduler, dict):
        from lorastudio.generate.config import GenerateConfig

        sampler = GenerateConfig.model_fields["sampler"].default
        notes.append(RecipeNote(
            "hcp_sampler_default", {"sampler": sampler},
            "the config names no scheduler: HCP-Diffusion sampled with the model's own (PNDM, A1111's PLMS, for"
            f" most SD 1.5 models); generating with {sampler}.",
        ))  # fmt: skip
        return
    target = str(scheduler.get("_target_") or "")
    name = next((part for part in reversed(target.split(".")) if part.endswith("Scheduler")), target)
    args = {k: v for k, v in scheduler.items() if k != "_target_"}
    if name == "DPMSolverMultistepScheduler":
        sampler = _MULTISTEP.get((args.pop("algorithm_type", "dpmsolver++"), args.pop("solver_order", 2)))
    else:
        sampler = _SAMPLERS.get(name)
    if sampler is None:
        _note(notes, "new_components.scheduler", target)
        return
    request["sampler"] = sampler
    for flag, schedule in _SCHEDULES.items():
        if args.pop(flag, False) is True:
            request["schedule"] = schedule
    if args.get("timestep_spacing") == "trailing":
        request["schedule"] = "SGM Uniform"
        args.pop("timestep_spacing")
    for key, value in args.items():
        if key not in _SD_SCHEDULE or value != _SD_SCHEDULE[key]:
            _note(notes, f"new_components.scheduler.{key}", value)


def _lora_tags(ws: Workspace, cfg: _Config, notes: list[RecipeNote], policy: NamePolicy) -> list[str]:
    """The `merge` groups' LoRAs as `<lora:NAME:te:unet>` tags: HCP's unet-N and text_encoder-N of one
    run are one LoRA here, found in loras/ by the names HCP and `lorastudio lora import` give it."""
    merge = cfg.get("merge")
    if not isinstance(merge, dict):
        return []
    pairs: dict[tuple[str, str], dict[str, float]] = {}  # (folder, name without its half's prefix) -> weights
    files: dict[tuple[str, str], str] = {}
    for group, body in merge.items():
        if group in ("alpha", "exp_dir"):
            continue
        if not isinstance(body, dict) or body.get("type") not in ("unet", "TE"):
            if body is not None:
                _note(notes, f"merge.{group}", body)
            continue
        half = "unet" if body["type"] == "unet" else "te"
        for key, value in body.items():
            if key == "base_model_alpha" and value not in (None, 1, 1.0):
                _note(notes, f"merge.{group}.base_model_alpha", value)
            elif key == "part" and value:
                for index, part in enumerate(value if isinstance(value, list) else [value]):
                    _note(notes, f"merge.{group}.part.{index}", part.get("path") if isinstance(part, dict) else part)
            elif key not in ("type", "lora", "part", "base_model_alpha"):
                _note(notes, f"merge.{group}.{key}", value)
        for index, entry in enumerate(body.get("lora") or []):
            where = f"merge.{group}.lora.{index}"
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                if not isinstance(entry, dict) or "path" not in entry:  # (an unresolved path is noted already)
                    _note(notes, where, entry)
                continue
            for key, fix in (("mask", "HCP applied that LoRA to one half of the batch, the negative or the positive"
                                     " prompt's; here it applies to both"), ("layers", "")):
                if entry.get(key) not in (None, "all"):
                    _note(notes, f"{where}.{key}", entry[key], fix)
            alpha = 1.0 if entry.get("alpha") is None else entry["alpha"]  # (an unresolved one is noted already)
            if isinstance(alpha, bool) or not isinstance(alpha, int | float):
                _note(notes, f"{where}.alpha", alpha)
                alpha = 1.0
            file = PurePosixPath(entry["path"].replace("\\", "/"))
            stem = file.name.rsplit(".", 1)[0] if "." in file.name else file.name
            rest = next((stem[len(p) :] for p in _HALVES if stem.startswith(p) and len(stem) > len(p)), None)
            key = (str(file.parent), rest if rest is not None else stem)
            pairs.setdefault(key, {})[half] = float(alpha)
            files.setdefault(key, entry["path"])
    tags = []
    for (folder, rest), weights in pairs.items():
        hcp_named = any(PurePosixPath(files[(folder, rest)]).name.startswith(p) for p in _HALVES)
        names = [f"{p}{rest}" for p in _HALVES] + [rest] if hcp_named else [rest]
        name = _library_lora(ws, names, policy)
        if name is None:
            notes.append(RecipeNote(
                "hcp_lora_missing", {"file": files[(folder, rest)], "names": ", ".join(names)},
                f"LoRA {files[(folder, rest)]} is not in this workspace's loras/ (looked for {', '.join(names)});"
                f" import it with `lorastudio lora import {files[(folder, rest)]}`, then read the config again.",
            ))  # fmt: skip
            continue
        te, unet = weights.get("te", 0.0), weights.get("unet", 0.0)
        tags.append(f"<lora:{name}:{te:g}>" if te == unet else f"<lora:{name}:{te:g}:{unet:g}>")
    return tags


def _library_lora(ws: Workspace, names: list[str], policy: NamePolicy) -> str | None:
    from lorastudio.service.names import find_lora

    for name in names:
        try:
            find_lora(ws, name, policy)
            return name
        except LorastudioError:
            continue
    return None


def _trigger_notes(ws: Workspace, cfg: _Config, prompt: str, notes: list[RecipeNote]) -> None:
    """HCP's trigger words (`name-STEP`, its embedding `emb_dir/name-STEP.pt`) that embeddings/ lacks."""
    from lorastudio.service.embedding_files import find_embedding

    steps = cfg.get("model_steps")
    if steps is None or isinstance(steps, bool) or not str(steps).isdigit():
        return
    emb_dir = str(cfg.get("emb_dir") or "embs/")
    for word in dict.fromkeys(re.findall(rf"(?<![\w.-])(\w[\w.-]*-{steps})(?![\w.-])", prompt)):
        if find_embedding(ws.embeddings, word) is None:
            file = PurePosixPath(emb_dir.replace("\\", "/")) / f"{word}.pt"
            notes.append(RecipeNote(
                "hcp_trigger_missing", {"word": word, "file": str(file)},
                f"trigger {word} has no embedding in embeddings/; copy {file} there (its .pt is read without"
                " unpickling code), or the word is read as plain text.",
            ))  # fmt: skip
