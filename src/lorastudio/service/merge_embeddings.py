"""The trigger embeddings a merged model needs, written beside it.

A pivotal LoRA's trigger word means its textual-inversion vectors (`bundle_emb.*` in the LoRA, or
the `embeddings/<trigger>.safetensors` its training run published). Baking the LoRA into a checkpoint
cannot carry them: a single file has no tokenizer to hold a new word. So `lora merge` writes each
as `<out stem>-embeddings/<trigger>.safetensors` (`emb_params`; SDXL `clip_l`/`clip_g`: what A1111's
and ComfyUI's embeddings folders load, the file stem being the prompt word), records the words in the
merged model (`lorastudio.trigger_embeddings`, or `_lorastudio_trigger_embeddings` in a diffusers
folder's model_index.json, which diffusers ignores) and says in one line per word where it went.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorastudio.errors import LorastudioError

if TYPE_CHECKING:
    from lorastudio.models.families import Family
    from lorastudio.models.loading import ModelRef
    from lorastudio.service.workspace import Workspace

__all__ = [
    "TRIGGERS_KEY",
    "TRIGGERS_INDEX_KEY",
    "TriggerEmbedding",
    "embeddings_folder",
    "earlier_triggers",
    "plan_trigger_embeddings",
    "split_for_model",
    "write_trigger_embeddings",
]

TRIGGERS_KEY = "lorastudio.trigger_embeddings"  # single-file metadata: JSON list of words
TRIGGERS_INDEX_KEY = "_lorastudio_trigger_embeddings"  # diffusers folder: model_index.json


@dataclass
class TriggerEmbedding:
    """One trigger word the merged model needs, its vectors (one set per text encoder) and its file."""

    word: str
    vectors: list[Any]
    source: str  # the LoRA (or model) file it came from, by name
    path: Path


def embeddings_folder(out: Path) -> Path:
    """`<name>-embeddings/` beside a merged model (`x.safetensors` or the folder `x/`)."""
    stem = out.stem if out.suffix.lower() == ".safetensors" else out.name
    return out.parent / f"{stem}-embeddings"


def earlier_triggers(ref: ModelRef) -> list[str]:
    """The words an earlier merge recorded in the model being merged into (a merge of a merge)."""
    from lorastudio.models.checkpoint import read_safetensors_metadata

    try:
        if ref.kind == "folder":
            index = json.loads((ref.path / "model_index.json").read_text(encoding="utf-8"))
            words = index.get(TRIGGERS_INDEX_KEY) or []
        elif ref.path.suffix.lower() == ".safetensors":
            words = json.loads(read_safetensors_metadata(ref.path).get(TRIGGERS_KEY) or "[]")
        else:
            return []
    except (LorastudioError, OSError, ValueError):
        return []
    return [w for w in words if isinstance(w, str)] if isinstance(words, list) else []


def _checked_word(word: str, source: str) -> str:
    """A trigger that can be a file name (the stem is the prompt word in A1111 and ComfyUI)."""
    if not word or Path(word).name != word or word in {".", ".."} or "\\" in word:
        raise LorastudioError(
            f"{source}: its trigger embedding {word!r} cannot be written as a file name; "
            "export it with `lora export --to kohya` and keep using the LoRA instead of a merge."
        )
    return word


def _published_embedding(ws: Workspace | None, lora) -> tuple[str, Path] | None:
    """(word, file) of the `embeddings/<trigger>` file this LoRA's own training run published, for
    a LoRA that does not bundle it (`generate` uses that file for the word)."""
    from lorastudio.service.embedding_files import find_embedding
    from lorastudio.service.embeddings import embedding_owner

    word = lora.metadata.get("modelspec.trigger_phrase")
    run = lora.metadata.get("ss_output_name")
    if ws is None or not word or not run or word in lora.embeddings:
        return None
    found = find_embedding(ws.embeddings, word)
    return (word, found) if found is not None and embedding_owner(found) == run else None


def _lora_embeddings(
    loras: list[tuple[Path, float, Any]], ws: Workspace | None
) -> list[tuple[str, list, str]]:
    """(word, vectors, source name) for each LoRA's bundled and published trigger embeddings."""
    from lorastudio.adapters.embeddings import load_embedding

    found = []
    for path, _weight, lora in loras:
        for word, vectors in lora.embeddings.items():
            found.append((word, list(vectors), path.name))
        published = _published_embedding(ws, lora)
        if published is not None:
            word, file = published
            found.append((word, load_embedding(file).vectors, f"{path.name} ({file.name})"))
    return found


def plan_trigger_embeddings(
    loras: list[tuple[Path, float, Any]], out: Path, ws: Workspace | None, ref: ModelRef
) -> tuple[list[TriggerEmbedding], list[str], list[str]]:
    """(embeddings to write, words the merged model records, note lines), checked before any model
    loads: no file is written over. The first LoRA naming a word wins, as in `generate`; a word an
    earlier merge recorded in the model keeps its file from beside that model."""
    from lorastudio.adapters.embeddings import load_embedding

    folder = embeddings_folder(out)
    planned: dict[str, TriggerEmbedding] = {}
    notes = []
    for word, vectors, source in _lora_embeddings(loras, ws):
        kept = planned.get(_checked_word(word, source))
        if kept is None:
            planned[word] = TriggerEmbedding(word, vectors, source, folder / f"{word}.safetensors")
        elif kept.source != source:
            notes.append(
                f"trigger {word!r}: {source} has it too; the merge keeps {kept.source}'s, as generate does."
            )
    earlier = earlier_triggers(ref)
    for word in earlier:
        if word in planned:
            continue
        beside = embeddings_folder(ref.path) / f"{word}.safetensors"
        if beside.is_file():
            vectors = load_embedding(beside).vectors
            planned[word] = TriggerEmbedding(word, vectors, ref.path.name, folder / beside.name)
        else:
            notes.append(
                f"trigger {word!r}: {ref.path.name} records it but {beside} is missing; the merged model "
                "needs that embedding too, copy it into the embeddings folder yourself."
            )
    if planned and folder.exists() and not folder.is_dir():
        raise LorastudioError(
            f"{folder}: is a file; the merged model's embeddings go there, choose another --out."
        )
    for embedding in planned.values():
        if embedding.path.exists():
            raise LorastudioError(
                f"{embedding.path}: already exists; choose another --out (nothing is overwritten)."
            )
    words = list(dict.fromkeys([*earlier, *planned]))
    return list(planned.values()), words, notes


def split_for_model(
    planned: list[TriggerEmbedding], components: dict[str, Any], family: Family
) -> list[TriggerEmbedding]:
    """Each embedding one vector set per text encoder of the loaded model: a CLIP-L + CLIP-G matrix side by
    side (HCP-Diffusion's SDXL files) is cut by the model's encoder widths (`split_joined_vectors`)."""
    from lorastudio.adapters.embeddings import Embedding, split_joined_vectors

    encoders = [components[name] for name in family.text_encoders if name in components]
    widths = [int(encoder.get_input_embeddings().weight.shape[-1]) for encoder in encoders]
    for embedding in planned:
        embedding.vectors = split_joined_vectors(Embedding(embedding.word, list(embedding.vectors)), widths).vectors
    return planned


def write_trigger_embeddings(planned: list[TriggerEmbedding], family: Family) -> tuple[list[str], list[str]]:
    """Write each embedding A1111/ComfyUI-loadable: (files written, one line per word saying where)."""
    from lorastudio.adapters.embeddings import Embedding, save_embedding

    if planned and not family.embedding_keys:  # Kolors' ChatGLM takes no textual inversion
        words = ", ".join(repr(e.word) for e in planned)
        note = f"trigger {words}: {family.label} models cannot use textual-inversion embeddings; not written."
        return [], [note]
    written, lines = [], []
    for embedding in planned:
        metadata = {"lorastudio.trigger_of": embedding.source}
        save_embedding(Embedding(embedding.word, embedding.vectors), embedding.path, family, metadata)
        written.append(str(embedding.path))
        lines.append(
            f"trigger {embedding.word!r}: embedding written to {embedding.path}; the merged model does not "
            "know this word by itself, so put that file into the embeddings folder of the UI that loads it "
            f"(A1111: embeddings/, ComfyUI: models/embeddings/ and write embedding:{embedding.word})."
        )
    return written, lines
