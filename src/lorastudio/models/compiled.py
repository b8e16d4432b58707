"""torch.compile for a loaded model's UNet and VAE decoder (`lorastudio serve --compile`).

On a GPU an eager UNet step is launch-bound (tens of kernels per layer, each a few
microseconds of work); compiled with mode "reduce-overhead" the step runs as a CUDA graph.
On a CPU inductor fuses elementwise work. Either way the first image of each size and batch
pays the compile, so it is for a server, not a one-off `generate`.

Why LoRAs keep working: they are patched into the weights in place (`adapters.patch`), and a
compiled module reads its parameters as graph inputs at their fixed addresses, CUDA graphs
included; nothing is re-captured when a request brings other LoRAs.

Compiled artefacts go to `<workspace>/cache/torch-compile` (inductor's FX graph and autograd
caches), so the next launch of the studio reuses them instead of compiling again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args

__all__ = ["COMPILE_BACKENDS", "CompileBackend", "compile_in_place", "compile_model", "compile_cache_dir", "eager_calls"]

logger = logging.getLogger(__name__)

# "inductor" is the real thing; "eager" and "aot_eager" trace without generating code (tests, debugging).
CompileBackend = Literal["inductor", "eager", "aot_eager"]
COMPILE_BACKENDS: tuple[str, ...] = get_args(CompileBackend)


def compile_cache_dir(cache_dir: Path) -> Path:
    """Point inductor's on-disk caches at the workspace (unless the user already chose a folder)."""
    folder = Path(os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(cache_dir) / "torch-compile")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def compile_in_place(module: Any, backend: str, cache_dir: Path, mode: str | None = None) -> None:
    """`module.compile` (state-dict names unchanged), static shapes, inductor's FX cache in the workspace.

    Static shapes (`dynamic=False`): each size and batch gets its own graph, which is what
    CUDA graphs need; torch falls back to eager after its recompile limit.
    """
    import torch

    if backend not in COMPILE_BACKENDS:
        raise ValueError(f"compile backend {backend!r}: choose one of {', '.join(COMPILE_BACKENDS)}")
    if backend == "inductor":
        compile_cache_dir(cache_dir)  # a later launch with the same shapes reuses the compiled code
        torch._inductor.config.fx_graph_cache = True  # noqa: SLF001 — the documented switch
    module.compile(backend=backend, mode=mode, dynamic=False)


def compile_model(model: Any, cache_dir: Path, backend: str = "inductor") -> Any:
    """Compile `model`'s UNet and VAE decoder in place (`compile_in_place`); returns the model."""
    on_gpu = str(model.device).startswith("cuda")
    mode = "reduce-overhead" if on_gpu and backend == "inductor" else None
    compile_in_place(model.unet, backend, cache_dir, mode)
    compile_in_place(model.vae.decoder, backend, cache_dir, mode)
    model.extra["compiled"] = {"backend": backend, "mode": mode or "default"}
    logger.info("compiled %s's UNet and VAE decoder (%s, mode %s)", model.name, backend, mode or "default")
    return model


@contextlib.contextmanager
def eager_calls(module: Any) -> Iterator[None]:
    """Calls to `module` (compiled in place with `Module.compile`) run eagerly meanwhile.

    A training run compiles its UNet for the training shapes; the samples it draws between
    steps have another batch (CFG) and size, and would compile new graphs each time until
    dynamo's recompile limit. They are a few steps every so often, so eager is the faster way.
    """
    compiled = module.__dict__.get("_compiled_call_impl")
    if compiled is None:
        yield
        return
    module._compiled_call_impl = None  # noqa: SLF001 — what Module.compile sets; __call__ falls back to eager
    try:
        yield
    finally:
        module._compiled_call_impl = compiled  # noqa: SLF001
