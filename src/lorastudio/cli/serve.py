"""`lorastudio serve`: the REST API (native + A1111-compatible) with an in-process worker."""

from __future__ import annotations

import typer

from lorastudio.cli import app
from lorastudio.cli.common import workspace


@app.command("serve")
def serve(
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes it to the network."
    ),
    port: int = typer.Option(7860, "--port", help="TCP port (A1111's default is 7860)."),
    model: str = typer.Option(None, "--model", help="Default model name (A1111 sd_model_checkpoint)."),
    auth: str = typer.Option(
        None,
        "--auth",
        envvar="LORASTUDIO_AUTH",
        help="HTTP Basic credentials user:pass (several: comma-separated).",
    ),
    token: str = typer.Option(
        None, "--token", envvar="LORASTUDIO_TOKEN", help="Bearer token accepted on every route."
    ),
    queue: str = typer.Option(
        None,
        "--queue",
        help="Queue URL (sqlite:///studio.db or postgresql://...); default $LORASTUDIO_QUEUE_URL.",
    ),
    device: str = typer.Option(None, "--device", help="Device of the in-process worker (cuda, cuda:1, cpu)."),
    max_models: int = typer.Option(1, "--max-models", help="Models kept loaded at once (LRU)."),
    preload: bool = typer.Option(True, "--preload/--no-preload", help="Load the default model at start."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
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
) -> None:
    """Serve the API (OpenAPI docs at /docs) and run queued jobs in this process."""
    from lorastudio.api.app import run_server
    from lorastudio.service.studio import Studio, StudioSettings

    settings = StudioSettings(
        queue_url=queue,
        model=model,
        device=device,
        max_models=max_models,
        preload=preload,
        max_queued_per_user=max_queued_per_user,
        model_memory_budget_bytes=int(memory_budget_gb * 2**30) if memory_budget_gb else None,
        artifacts_url=artifacts_url,
    )
    studio = Studio(workspace(), settings)
    typer.echo(f"lorastudio: serving http://{host}:{port} (docs at /docs), model {studio.model}", err=True)
    run_server(studio, host=host, port=port, auth=auth, token=token, log_level=log_level)
