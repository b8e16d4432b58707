"""What `lorastudio serve` can set for a studio: queue, model, device, caches, request limits, retention."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lorastudio.service.artifacts import resolve_artifacts_url
from lorastudio.service.jobs import resolve_queue_url
from lorastudio.service.quota import max_queued_from_env
from lorastudio.service.retention import keep_jobs_days_from_env

__all__ = ["StudioSettings"]


@dataclass
class StudioSettings:
    """Everything `lorastudio serve` can set; `queue_url` defaults to `LORASTUDIO_QUEUE_URL` or studio.db."""

    queue_url: str | None = None
    model: str | None = None
    device: str | None = None
    max_models: int = 1
    model_memory_budget_bytes: int | None = None  # LRU-evict loaded models beyond this many bytes of weights
    lease_s: float | None = None
    # Load the default model when the worker starts (as A1111 does), not on the first request.
    preload: bool = False
    # Request bodies (JSON with base64 images) and file uploads are capped: images, zips and
    # other uploads per file (`--max-upload-mb`), weight files (checkpoints) per file.
    max_json_bytes: int = 64 * 1024**2
    max_upload_bytes: int = 512 * 1024**2
    max_weights_upload_bytes: int = 16 * 1024**3
    # Work one request may ask for (each a `lorastudio serve` option; 0 = no limit).
    max_prompt_chars: int = 10_000  # prompt and negative prompt, each
    max_image_pixels: int = 2048 * 2048  # width x height of one generated image
    max_output_pixels: int = 4096 * 4096  # after hires fix or /extra-single-image upscaling
    max_images_per_request: int = 16  # batch_size x n_iter
    max_grid_cells: int = 64  # cells of one X/Y/Z grid (each one image)
    max_steps: int = 150  # sampling steps, and hires steps
    max_options_bytes: int = 64 * 1024  # one user's A1111 options, as JSON
    # Unfinished (queued + running) jobs one user may have; more answer 429. 0 = no limit.
    # None reads LORASTUDIO_MAX_QUEUED_PER_USER (default 100).
    max_queued_per_user: int | None = None
    # Where finished jobs' files are downloaded from: '' = the workspace, or s3://bucket/prefix?...
    # None reads LORASTUDIO_ARTIFACTS_URL.
    artifacts_url: str | None = None
    # Requests may name Hugging Face hub ids (`org/name`) for models and tagger/captioner/CLIP
    # models, fetched or read from the HF cache; only when the machine is online
    # (HF_HUB_OFFLINE unset). Off: every name is a file or folder in the workspace.
    allow_hub_ids: bool = False
    # Finished jobs (their events, the request uploads only they named) are purged this many days after
    # they finished, at start and hourly (`service.retention`); 0 keeps every job. None reads
    # LORASTUDIO_KEEP_JOBS_DAYS (default 0: nothing is deleted unless an admin asks).
    keep_jobs_days: float | None = None
    # torch.compile the UNet and VAE decoder of each loaded model ("inductor"; CUDA graphs on a GPU).
    compile_backend: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.queue_url = resolve_queue_url(self.queue_url)
        if self.max_queued_per_user is None:
            self.max_queued_per_user = max_queued_from_env()
        self.artifacts_url = resolve_artifacts_url(self.artifacts_url)
        if self.keep_jobs_days is None:
            self.keep_jobs_days = keep_jobs_days_from_env()
