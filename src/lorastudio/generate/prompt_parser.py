"""The A1111 prompt functions under the names the rest of lorastudio imports.

The grammar itself lives in `prompt_grammar`; this module keeps the webui's public names
(`parse_prompt_attention`, `get_learned_conditioning_prompt_schedules`, ...) so callers
and users' scripts read the same.
"""

from __future__ import annotations

from lorastudio.generate.prompt_grammar import (
    ExtraNetwork,
    attention_pairs,
    extract_extra_networks,
    prompt_schedules,
    split_composable,
)

__all__ = [
    "ExtraNetwork",
    "extract_extra_networks",
    "get_learned_conditioning_prompt_schedules",
    "parse_prompt_attention",
    "split_composable",
]


def parse_prompt_attention(text: str) -> list[list]:
    """Split a prompt into `[text, weight]` pairs: `(a)` x1.1, `(a:1.3)`, `[a]` /1.1, BREAK.

    >>> parse_prompt_attention("(unbalanced")
    [['unbalanced', 1.1]]
    """
    return attention_pairs(text)


def get_learned_conditioning_prompt_schedules(
    prompts: list[str],
    steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
) -> list[list[list]]:
    """For each prompt, the texts to condition on: `[[end_step, text], ...]`.

    >>> get_learned_conditioning_prompt_schedules(["a [b:c:5] d"], 10)
    [[[5, 'a b d'], [10, 'a c d']]]
    """
    return prompt_schedules(prompts, steps, hires_steps, use_old_scheduling)
