"""`serve --compile`: compiled models give the plain images, and per-request LoRAs still apply.

Inductor's code generation takes minutes on a CPU, so the suite traces with the "eager"
backend: the same dynamo graphs, the same in-place LoRA patching seen through them.
`benchmarks/compile.py` times the real compiler.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lora_helpers import random_lora
from lorastudio.generate.config import GenerateConfig
from lorastudio.service.generation import run_generation
from lorastudio.service.model_cache import ModelCache


def _pixels(result) -> np.ndarray:
    return np.asarray(Image.open(result.images[0].path).convert("RGB"), dtype=np.float32)


@pytest.mark.slow
def test_compiled_model_gives_the_plain_images_with_and_without_loras(tiny_workspace, tmp_path, monkeypatch):
    from lorastudio.adapters import save_kohya

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    plain_cache = ModelCache(tiny_workspace)
    model = plain_cache.get("tiny-sd15")
    save_kohya(random_lora(model), tiny_workspace.loras / "wild.safetensors", family=model.family,
               unet_config=model.unet.config)  # fmt: skip
    compiled_cache = ModelCache(tiny_workspace, compile_backend="eager")
    assert compiled_cache.get("tiny-sd15").extra["compiled"]["backend"] == "eager"

    def both(prompt: str) -> tuple[np.ndarray, np.ndarray]:
        cfg = GenerateConfig(model="tiny-sd15", prompt=prompt, steps=4, seed=7, width=64, height=64)
        return (
            _pixels(run_generation(tiny_workspace, cfg, plain_cache, out_dir=tmp_path / "plain")),
            _pixels(run_generation(tiny_workspace, cfg, compiled_cache, out_dir=tmp_path / "compiled")),
        )

    plain, compiled = both("a red cube")
    assert np.array_equal(plain, compiled)
    plain_lora, compiled_lora = both("a red cube <lora:wild:1>")
    assert np.abs(plain_lora - plain).mean() > 0.1  # the LoRA does something ...
    assert np.array_equal(plain_lora, compiled_lora)  # ... and the compiled graphs see it
    cfg = GenerateConfig(model="tiny-sd15", prompt="a red cube", steps=4, seed=7, width=64, height=64)
    compiled_after = _pixels(run_generation(tiny_workspace, cfg, compiled_cache, out_dir=tmp_path / "after"))
    assert np.array_equal(compiled_after, plain)  # and nothing of it stays


def test_unknown_compile_backend_is_refused(tiny_workspace):
    from lorastudio.models.compiled import compile_model

    model = ModelCache(tiny_workspace).get("tiny-sd15")
    with pytest.raises(ValueError, match="choose one of"):
        compile_model(model, tiny_workspace.cache, "tensorrt")


@pytest.mark.slow
def test_training_with_a_compiled_unet_writes_the_plain_lora(workspace, tiny_models_dir, tmp_path, capfd):
    """`train.torch_compile` (kohya torch_compile / dynamo_backend): same steps, same file, same names."""
    import torch
    from safetensors.torch import load_file

    from lorastudio.service.training import run_training
    from lorastudio.train.kohya_config import import_kohya_config, kohya_yaml_config
    from training_helpers import tiny_train_config, write_images

    (workspace.models / "tiny-sd15").symlink_to(tiny_models_dir / "tiny-sd15", target_is_directory=True)
    data = write_images(tmp_path / "red", [((230, 20 + i, 25), "zqx") for i in range(4)])

    def run(name: str, *extra: str) -> dict:
        cfg = tiny_train_config(data, "zqx", "train.steps=3", "lora.rank=4", "seed=3", f"output.name={name}", *extra)
        return load_file(run_training(workspace, cfg, progress=True)["lora"])

    plain = run("plain")
    assert "compile:" not in capfd.readouterr().err
    compiled = run("compiled", "train.torch_compile=true", "train.dynamo_backend=eager")
    assert "compile: UNet with torch.compile (eager)" in capfd.readouterr().err
    assert plain.keys() == compiled.keys()
    for key in plain:
        torch.testing.assert_close(compiled[key], plain[key], rtol=1e-5, atol=1e-6, msg=key)
    toml = tmp_path / "kohya.toml"
    toml.write_text('torch_compile = true\ndynamo_backend = "EAGER"\n')
    train = kohya_yaml_config(import_kohya_config(toml))["train"]
    assert (train["torch_compile"], train["dynamo_backend"]) == (True, "eager")
    toml.write_text('torch_compile = false\ndynamo_backend = "no"\n')  # kohya_ss GUI's default
    imported = import_kohya_config(toml)
    assert "dynamo_backend" not in kohya_yaml_config(imported).get("train", {})
    toml.write_text('dynamo_backend = "cudagraphs"\n')
    assert any(key == "dynamo_backend" for key, _ in import_kohya_config(toml).unmapped)


@pytest.mark.slow
def test_samples_during_a_compiled_training_run_eagerly_and_compile_nothing(workspace, tiny_models_dir, tmp_path):
    """Samples (a CFG batch of two) would compile new UNet graphs each time; they run eager."""
    import torch._dynamo

    from lorastudio.service.training import run_training
    from training_helpers import tiny_train_config, write_images

    (workspace.models / "tiny-sd15").symlink_to(tiny_models_dir / "tiny-sd15", target_is_directory=True)
    data = write_images(tmp_path / "red", [((230, 20 + i, 25), "zqx") for i in range(4)])
    compiled_frames = torch._dynamo.utils.counters["frames"]
    torch._dynamo.reset()
    before = compiled_frames["ok"]
    seen: dict[str, int] = {}  # frames compiled so far, at each step and samples event

    def count(event: dict) -> None:
        if event.get("event") in ("step", "samples"):
            seen[f"{event['event']}-{event['step']}"] = compiled_frames["ok"] - before

    cfg = tiny_train_config(
        data, "zqx", "train.steps=4", "lora.rank=4", "seed=3", "output.name=sampled",
        "train.torch_compile=true", "train.dynamo_backend=eager",
        "samples.prompts=[zqx, a red square]", "samples.every_steps=2", "samples.steps=3",
    )  # fmt: skip
    run_training(workspace, cfg, callback=count)
    assert {"samples-2", "samples-4"} <= seen.keys()
    assert seen["step-1"] > 0  # the first training step is compiled ...
    # ... and nothing after it: neither the samples at steps 2 and 4 nor the training steps between them
    assert set(seen.values()) == {seen["step-1"]} == {compiled_frames["ok"] - before}, seen
    assert len(list((workspace.runs / "sampled" / "samples").glob("step-*/*.png"))) == 4
