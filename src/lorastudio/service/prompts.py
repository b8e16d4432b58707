"""How a prompt is read (A1111 syntax), for the fronts: attention weights and the step schedule.

The CLI's `prompt parse|schedule` (and later the UI) call these, so they never reach into
`generate/` themselves and all show what generation itself will use.
"""

from __future__ import annotations

__all__ = ["prompt_weights", "prompt_schedule"]


def prompt_weights(text: str) -> list[list[str | float]]:
    """Each piece of the prompt with its attention weight: `[[text, weight], ...]`, as A1111 returns."""
    from lorastudio.generate.prompt_parser import parse_prompt_attention

    return parse_prompt_attention(text)


def prompt_schedule(text: str, steps: int) -> list[list[int | str]]:
    """Which text conditions each range of steps: `[[end_step, text], ...]` (editing, alternation)."""
    from lorastudio.generate.prompt_parser import get_learned_conditioning_prompt_schedules

    return get_learned_conditioning_prompt_schedules([text], steps)[0]
