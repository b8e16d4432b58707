"""An image's LoRAs under this workspace's names, found by the hashes its infotext records.

A1111 writes `Lora hashes: "name: 0b07a4510f85, ..."` beside the prompt's `<lora:name:w>`
tags; pasting the image into another install rewrites each tag whose name that install lacks
to the local LoRA with the same hash (the file was renamed, or came from civitai under
another name). Recipes read here do the same, so the image regenerates with the same weights.
"""

from __future__ import annotations

import re
from typing import Any

from lorastudio.errors import LorastudioError
from lorastudio.service.workspace import Workspace, list_weight_files

__all__ = ["lora_hash_pairs", "rename_lora_tags", "rename_loras_by_hash"]

# the request fields that hold `<lora:…>` tags (a hires prompt repeats the prompt's)
PROMPT_KEYS = ("prompt", "negative_prompt", "hires_prompt", "hires_negative_prompt")
LORA_TAG = re.compile(r"(<(?:lora|lyco):)([^:>]+)([:>])", re.IGNORECASE)


def lora_hash_pairs(value: object) -> dict[str, str]:
    """`Lora hashes`' "name: hash, name: hash" as {name: 12-hex hash} (lower case)."""
    pairs = {}
    for part in str(value or "").strip().strip('"').split(","):
        name, _, short = part.rpartition(":")
        if name.strip() and re.fullmatch(r"[0-9a-fA-F]{10,64}", short.strip()):
            pairs[name.strip()] = short.strip().lower()[:12]
    return pairs


def rename_lora_tags(request: dict[str, Any], names: dict[str, str]) -> None:
    """Rewrite the request's prompts' `<lora:OLD:` tags to `<lora:NEW:` for each OLD: NEW of `names`."""

    def swap(match: re.Match) -> str:
        name = match.group(2)
        return f"{match.group(1)}{names[name]}{match.group(3)}" if name in names else match.group(0)

    for key in PROMPT_KEYS:
        if names and isinstance(request.get(key), str):
            request[key] = LORA_TAG.sub(swap, request[key])


def rename_loras_by_hash(
    ws: Workspace, params: dict[str, Any], request: dict[str, Any]
) -> list[tuple[str, str]]:
    """Rewrite the request's prompts' `<lora:NAME:` tags that no local LoRA answers to, where the
    image's `Lora hashes` gives NAME a hash a local LoRA has. Returns the (old, new) names."""
    from lorastudio.service.names import find_lora

    wanted = lora_hash_pairs(params.get("Lora hashes"))
    if not wanted:
        return []
    local: dict[str, str] | None = None
    renamed: list[tuple[str, str]] = []

    def missing(name: str) -> bool:
        try:
            find_lora(ws, name)
        except LorastudioError:
            return True
        return False

    def swap(match: re.Match) -> str:
        nonlocal local
        name = match.group(2)
        if name not in wanted or not missing(name):
            return match.group(0)
        local = _local_lora_hashes(ws) if local is None else local
        found = local.get(wanted[name])
        if found is None:
            return match.group(0)
        if (name, found) not in renamed:
            renamed.append((name, found))
        return f"{match.group(1)}{found}{match.group(3)}"

    for key in PROMPT_KEYS:
        if isinstance(request.get(key), str):
            request[key] = LORA_TAG.sub(swap, request[key])
    return renamed


def _local_lora_hashes(ws: Workspace) -> dict[str, str]:
    """{A1111 short hash: LoRA name} for the workspace's safetensors LoRAs (a file that cannot be
    read is left out; the first of two files with one hash wins)."""
    from lorastudio.adapters.hashing import lora_short_hash
    from lorastudio.models.checkpoint import cached_file_hash

    hashes: dict[str, str] = {}
    for path in list_weight_files(ws.loras, "lora"):
        if path.suffix.lower() != ".safetensors":
            continue
        try:
            # kept by path, size and mtime: a file without `sshs_model_hash` is read whole to hash once,
            # not on every image dropped into PNG info
            hashes.setdefault(cached_file_hash(path, ws.cache, lora_short_hash, kind="lora-short"), path.stem)
        except Exception:  # safetensors' own error too: an unreadable file is one not matched
            continue
    return hashes

