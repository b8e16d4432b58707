"""`lorastudio serve`: the REST API (native + A1111-compatible) with an in-process worker."""

from __future__ import annotations

import typer

from lorastudio.cli import app
from lorastudio.cli.common import workspace
from lorastudio.cli.jobs import KEEP_JOBS_HELP


@app.command("serve")
def serve(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes it to the network."
    ),
    port: int = typer.Option(7860, "--port", min=1, max=65535, help="TCP port (A1111's default is 7860)."),
    model: str = typer.Option(None, "--model", help="Default model name (A1111 sd_model_checkpoint)."),
    auth: str = typer.Option(
        None,
        "--auth",
        envvar="LORASTUDIO_AUTH",
        help="HTTP Basic credentials user:pass (several: comma-separated).",
    ),
    token: list[str] = typer.Option(
        None,
        "--token",
        envvar="LORASTUDIO_TOKEN",
        help="Bearer token name:secret (its own user: quota, options, jobs); repeatable. "
        "A bare secret is the anonymous user.",
    ),
    tokens_file: str = typer.Option(
        None, "--tokens-file", help="File of name:secret lines, one bearer token (and user) each."
    ),
    queue: str = typer.Option(
        None,
        "--queue",
        help="Queue URL (sqlite:///studio.db or postgresql://...); default $LORASTUDIO_QUEUE_URL.",
    ),
    device: str = typer.Option(None, "--device", help="Device of the in-process worker (cuda, cuda:1, cpu)."),
    max_models: int = typer.Option(1, "--max-models", help="Models kept loaded at once (LRU)."),
    preload: bool = typer.Option(True, "--preload/--no-preload", help="Load the default model at start."),
    compile_models: bool = typer.Option(
        False,
        "--compile",
        help="torch.compile each loaded model's UNet and VAE decoder (CUDA graphs on a GPU). The first "
        "image of each size pays the compile; later launches reuse studio/cache/torch-compile.",
    ),
    allow_hub_ids: bool = typer.Option(
        False,
        "--allow-hub-ids",
        help="Let requests name Hugging Face hub ids (org/name) for models and tagger/captioner/CLIP "
        "models (only while online: HF_HUB_OFFLINE unset). Off: names are files in the workspace.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    ui: bool = typer.Option(True, "--ui/--no-ui", help="Serve the web UI at / (Gradio); --no-ui: the API only."),
    root_path: str = typer.Option(
        "", "--root-path", help="URL prefix when served behind a reverse proxy (e.g. /studio)."
    ),
    memory_budget_gb: float = typer.Option(
        None, "--memory-budget-gb", help="Evict loaded models (LRU) beyond this many GB of weights."
    ),
    max_queued_per_user: int = typer.Option(
        None,
        "--max-queued-per-user",
        help="Unfinished jobs per user before 429 (env LORASTUDIO_MAX_QUEUED_PER_USER).",
    ),
    artifacts_url: str = typer.Option(
        None, "--artifacts-url", help="s3://bucket/prefix?endpoint_url=... (env LORASTUDIO_ARTIFACTS_URL)."
    ),
    max_prompt_chars: int = typer.Option(
        10_000,
        "--max-prompt-chars",
        help="Longest prompt (and negative prompt) a request may send; 0 = no limit.",
    ),
    max_pixels: int = typer.Option(
        2048 * 2048, "--max-pixels", help="Largest width x height of one generated image; 0 = no limit."
    ),
    max_output_pixels: int = typer.Option(
        4096 * 4096, "--max-output-pixels", help="Largest image after hires fix or upscaling; 0 = no limit."
    ),
    max_images: int = typer.Option(
        16, "--max-images", help="Most images per request (batch_size x n_iter); 0 = no limit."
    ),
    max_grid_cells: int = typer.Option(
        64, "--max-grid-cells", help="Most cells in one X/Y/Z plot grid request; 0 = no limit."
    ),
    max_steps: int = typer.Option(
        150, "--max-steps", help="Most sampling steps (and hires steps) per request; 0 = no limit."
    ),
    max_upload_mb: int = typer.Option(
        512, "--max-upload-mb", help="Largest uploaded image/zip file (and JSON body is capped at 64 MB)."
    ),
    max_weights_upload_mb: int = typer.Option(
        16 * 1024, "--max-weights-upload-mb", help="Largest uploaded checkpoint/LoRA/embedding file."
    ),
    max_options_kb: int = typer.Option(
        64, "--max-options-kb", help="Largest set of A1111 options one user may store; 0 = no limit."
    ),
    keep_jobs_days: float = typer.Option(None, "--keep-jobs-days", min=0, help=KEEP_JOBS_HELP),
) -> None:
    """Serve the web UI (at /), the API (OpenAPI docs at /docs) and run queued jobs in this process."""
    from lorastudio.api.app import bearer_tokens, run_server
    from lorastudio.service.studio import Studio, StudioSettings

    tokens = bearer_tokens(token, tokens_file)

    settings = StudioSettings(
        queue_url=queue,
        model=model,
        device=device,
        max_models=max_models,
        preload=preload,
        compile_backend="inductor" if compile_models else None,
        allow_hub_ids=allow_hub_ids,
        max_queued_per_user=max_queued_per_user,
        model_memory_budget_bytes=int(memory_budget_gb * 2**30) if memory_budget_gb else None,
        artifacts_url=artifacts_url,
        max_prompt_chars=max_prompt_chars,
        max_image_pixels=max_pixels,
        max_output_pixels=max_output_pixels,
        max_images_per_request=max_images,
        max_grid_cells=max_grid_cells,
        max_steps=max_steps,
        max_upload_bytes=max_upload_mb * 2**20,
        max_weights_upload_bytes=max_weights_upload_mb * 2**20,
        max_options_bytes=max_options_kb * 1024,
        keep_jobs_days=keep_jobs_days,
    )
    studio = Studio(workspace(), settings)
    where = f"http://{host}:{port}{root_path}"

    def announce() -> None:  # once the app is built: a malformed --auth is refused before this line
        typer.echo(
            f"lorastudio: serving {where}/ (web UI{'' if ui else ' off'}; API docs at {where}/docs), "
            f"model {studio.model}",
            err=True,
        )

    run_server(
        studio,
        host=host,
        port=port,
        auth=auth,
        tokens=tokens,
        log_level=log_level,
        ui=ui,
        root_path=root_path.rstrip("/"),
        announce=announce,
    )
