"""Sample prompts with kohya's per-line options: `a red car --n lowres --w 768 --h 512 --d 1 --l 7 --s 28`.

kohya sd-scripts reads each line of its `sample_prompts` file as a prompt followed by options
(`--n` negative prompt, `--w`/`--h` size, `--d` seed, `--l` CFG scale, `--s` steps, `--ss` sampler);
its .toml and .json prompt files give the same settings as tables. `samples.prompts` takes the
same line syntax, so a kohya user's prompts draw the same samples; an option a line leaves out
takes the `samples.*` value (and the size `train.resolution`).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "KOHYA_PROMPT_KEYS",
    "SamplePrompt",
    "parse_sample_prompt",
    "read_kohya_prompt_file",
    "sample_prompt_line",
]

# Options lorastudio draws with: flag -> SamplePrompt field.
OPTIONS = {"n": "negative", "w": "width", "h": "height", "d": "seed", "l": "cfg_scale", "s": "steps", "ss": "sampler"}
# kohya options for other model kinds (flow models, ControlNet sampling, video): no SD sample uses them.
FOREIGN_OPTIONS = {
    "g": "a flow model's distilled guidance scale",
    "cn": "a ControlNet image",
    "ctr": "CFG truncation of flow models",
    "rcfg": "renormalised CFG of flow models",
    "fs": "a flow model's timestep shift",
    "f": "a video's frame count",
}
# kohya's prompt-file table keys (load_prompts / line_to_prompt_dict) -> flag.
KOHYA_PROMPT_KEYS = {
    "negative_prompt": "n",
    "width": "w",
    "height": "h",
    "seed": "d",
    "scale": "l",
    "sample_steps": "s",
    "sample_sampler": "ss",
    "guidance_scale": "g",
    "controlnet_image": "cn",
    "cfg_trunc_ratio": "ctr",
    "renorm_cfg": "rcfg",
    "flow_shift": "fs",
    "frame_count": "f",
}


@dataclass(frozen=True)
class SamplePrompt:
    """One sample: its prompt and the settings its line gives (None: the `samples.*` value)."""

    prompt: str
    negative: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    cfg_scale: float | None = None
    steps: int | None = None
    sampler: str | None = None

    def line(self) -> str:
        """The prompt in the option syntax again (what a config file keeps)."""
        flags = {field: flag for flag, field in OPTIONS.items()}
        parts = [self.prompt]
        for item in fields(self)[1:]:
            value = getattr(self, item.name)
            if value is not None:
                parts.append(f"--{flags[item.name]} {_shown(value)}")
        return " ".join(parts)


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def split_options(line: str) -> tuple[str, list[tuple[str, str]]]:
    """`prompt --x value --y value` -> (prompt, [(x, value), ...]), split at " --" as kohya does."""
    prompt, *parts = line.split(" --")
    options = []
    for part in parts:
        match = re.fullmatch(r"([A-Za-z]+)(?:\s+(.*))?", part.strip(), re.S)
        flag = match.group(1).lower() if match else part.strip().split(" ")[0]
        options.append((flag, (match.group(2) or "").strip() if match else part.strip()))
    return prompt.strip(), options


def parse_sample_prompt(line: str, foreign: list[str] | None = None) -> SamplePrompt:
    """One `samples.prompts` line as a SamplePrompt; ValueError naming the option that is wrong.

    kohya's options for other model kinds (`--g`, `--cn`, ...) are refused, or, with a `foreign`
    list (a kohya import), left out and named there.
    """
    prompt, options = split_options(line)
    values: dict[str, Any] = {}
    for flag, text in options:
        if flag in FOREIGN_OPTIONS and foreign is not None:
            foreign.append(f"--{flag} ({FOREIGN_OPTIONS[flag]})")
            continue
        if flag not in OPTIONS:
            known = ", ".join(f"--{f}" for f in OPTIONS)
            what = f" ({FOREIGN_OPTIONS[flag]}, not used by lorastudio's samples)" if flag in FOREIGN_OPTIONS else ""
            raise ValueError(f"sample prompt {line!r}: unknown option --{flag}{what}; use {known}")
        if not text:
            raise ValueError(f"sample prompt {line!r}: option --{flag} needs a value, e.g. --{flag} {_EXAMPLES[flag]}")
        values[OPTIONS[flag]] = _option_value(flag, text, line)
    return SamplePrompt(prompt, **values)


_EXAMPLES = {"n": "lowres", "w": "512", "h": "512", "d": "1", "l": "7", "s": "20", "ss": "euler_a"}


def _option_value(flag: str, text: str, line: str) -> Any:
    try:
        if flag in ("w", "h"):
            size = int(text)
            return max(64, size - size % 8)  # kohya rounds a side down to a multiple of 8, at least 64
        if flag == "d":
            seed = int(text)
            if seed < -1:
                raise ValueError
            return seed
        if flag == "s":
            return max(1, min(1000, int(text)))  # kohya's bounds
        if flag == "l":
            scale = float(text)
            if scale < 0:
                raise ValueError
            return scale
    except ValueError:
        raise ValueError(
            f"sample prompt {line!r}: --{flag} {text!r} is not a valid value; e.g. --{flag} {_EXAMPLES[flag]}"
        ) from None
    if flag == "ss":
        return sampler_of(text, line)
    return text  # --n


def sampler_of(name: str, line: str = "") -> str:
    """An A1111 sampler name for `--ss`: A1111's names and kohya's (`euler_a`, `k_dpm_2`, `dpmsolver++`)."""
    from lorastudio.errors import LorastudioError
    from lorastudio.generate.samplers import parse_sampler
    from lorastudio.train.kohya_keys import KOHYA_KEYS, Unmapped

    def a1111_name(text: str) -> str:
        choice = parse_sampler(text)
        return choice.sampler if choice.schedule == "Automatic" else f"{choice.sampler} {choice.schedule}"

    try:
        return a1111_name(name)
    except LorastudioError:
        pass
    try:
        return a1111_name(KOHYA_KEYS["sample_sampler"].convert(name))
    except (Unmapped, LorastudioError):
        raise ValueError(
            f"sample prompt {line!r}: --ss {name!r} is not a sampler; use an A1111 name such as 'Euler a'"
            " or a kohya name such as euler_a"
        ) from None


def sample_prompt_line(entry: dict[str, Any] | str) -> str:
    """A kohya prompt-file entry (a line, or a table of prompt_dict keys) as one option-syntax line."""
    if isinstance(entry, str):
        return entry.strip()
    parts = [str(entry.get("prompt", "")).strip()]
    for key, flag in KOHYA_PROMPT_KEYS.items():
        value = entry.get(key)
        if value is not None and value != "":
            parts.append(f"--{flag} {value}")
    return " ".join(parts)


def read_kohya_prompt_file(path: Path) -> list[str]:
    """kohya's `sample_prompts` file (.txt lines, .toml `[prompt]` + `[[prompt.subset]]`, .json list) as lines.

    Raises ValueError for a file kohya would not read either.
    """
    from lorastudio.config import read_text_file

    text = read_text_file(path, "sample prompts file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if suffix == ".toml":
        try:
            table = tomllib.loads(text).get("prompt") or {}
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc})") from None
        common = {key: value for key, value in table.items() if key != "subset"}
        entries = [{**common, **subset} for subset in table.get("subset") or [] if isinstance(subset, dict)]
    elif suffix == ".json":
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(entries, list):
            raise ValueError(f"{path}: holds no list of prompts")
    else:
        raise ValueError(f"{path}: kohya reads .txt, .toml or .json prompt files")
    return [line for line in (sample_prompt_line(e) for e in entries if isinstance(e, dict | str)) if line]
