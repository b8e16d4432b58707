"""Story series as a job: one image set per prompt of a prompt list, and a contact sheet.

The users' story walk-through (one character through many scenes): the same base request
(model, LoRAs, size, sampler) for every prompt, seeds by one policy. `lorastudio generate
--prompts` runs it directly; the API and the web UI queue it as a `series` job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from lorastudio.config import StrictModel, load_config
from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.series import SeriesRequest, looks_like_yaml_list, parse_prompt_list, series_requests
from lorastudio.service.job_steps import (
    StepReporter,
    generation_config,
    keep_partial_result,
    model_cache_of,
    noting_loaded_models,
)

if TYPE_CHECKING:
    from lorastudio.service.jobs.context import JobContext
    from lorastudio.service.jobs.store import Job

__all__ = ["SeriesJob", "SeriesRequest", "series_entries", "series_handler", "submit_series"]


class SeriesJob(StrictModel):
    """A series request as the API takes it: the base generation and the prompt list."""

    config: GenerateConfig = Field(default_factory=GenerateConfig, description="The base request for every prompt.")
    series: SeriesRequest = Field(description="The prompt list and the seed policy.")


def series_entries(request: SeriesRequest) -> list[dict[str, Any]]:
    """The prompt list of a series request (lines, or YAML when it looks like a YAML list)."""
    return parse_prompt_list(request.prompts, looks_like_yaml_list(request.prompts), "series.prompts")


def series_handler(ctx: JobContext) -> dict[str, Any]:
    """payload: `config` (the base GenerateConfig) and `series` (SeriesRequest): one image set per
    prompt and a contact sheet, in `outputs/<job id>/`. A cancel keeps the pictures made so far."""
    from lorastudio.service.generation import run_series

    cfg = generation_config(ctx)
    request = SeriesRequest.model_validate(ctx.payload.get("series") or {})
    cache = model_cache_of(ctx)
    reporter = StepReporter(ctx)
    with noting_loaded_models(ctx, cache):
        result = run_series(
            ctx.workspace, cfg.model_dump(exclude_defaults=True), series_entries(request), request.seed_policy,
            reporter.progress, out_dir=ctx.artifacts_dir, cache=cache, should_stop=reporter.should_stop,
            preview=reporter.preview, sheet_name="contact-sheet.png", styles=request.styles,
        )  # fmt: skip
    answer = {
        "images": [image.path.name for image in result.images],
        "seeds": [image.seed for image in result.images],
        "contact_sheet": result.contact_sheet.name if result.contact_sheet else None,
        "model": result.model,
    }
    return keep_partial_result(ctx, reporter, answer)


def submit_series(
    studio: Any, cfg: GenerateConfig, request: SeriesRequest, *, user: str = "", priority: int = 0
) -> Job:
    """Queue a story series; every entry is checked now (names, limits) as its own generation would be."""
    from lorastudio.generate.samplers import parse_sampler
    from lorastudio.service.limits import check_series_prompts

    entries = series_entries(request)
    if not entries:
        raise LorastudioError("series.prompts: contains no prompts; write one prompt per line.")
    check_series_prompts(studio.settings, len(entries))
    base = cfg.model_dump(exclude_defaults=True)
    if request.styles:  # checked now (an unknown style) as each picture will be made
        from lorastudio.service.styles import styled_entries

        entries = styled_entries(studio.workspace, entries, request.styles, cfg.negative_prompt)
    for entry in series_requests(base, entries, 0, request.seed_policy):
        one = load_config(GenerateConfig, None, entry)
        parse_sampler(one.sampler, one.schedule)
        studio.check_generate_limits(one)
        studio.resolve_generate(one)
    cfg = studio.resolve_generate(cfg)
    payload = {"config": cfg.model_dump(), "series": request.model_dump()}
    return studio.submit("series", payload, user=user, priority=priority, affinity=cfg.model)
