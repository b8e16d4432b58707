"""Pivotal LoRAs for plain diffusers: `export --no-embeddings` (kohya) and `--to diffusers|peft`.

A pivotal LoRA bundles its trigger embedding (`bundle_emb.*`), which A1111 reads (ComfyUI ignores it)
but diffusers' `load_lora_weights` refuses. The exports write the LoRA without it and the
embedding as `<token>.safetensors`; plain diffusers then draws what lorastudio draws.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from lorastudio.adapters import (
    Embedding,
    LoraFile,
    LoraModule,
    embeddings_from_lora,
    load_embedding,
    load_lora_file,
    save_diffusers,
    save_embedding,
    save_kohya,
)

TRIGGER = "zqxpiv"
PROMPT = f"a {TRIGGER} picture"
SEED, STEPS, SIZE = 7, 6, 64


def _plain_pipe(folder):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)  # lorastudio's "Euler"
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pivotal_lora(pipe) -> LoraFile:
    """UNet + text-encoder LoRA with a 2-vector trigger bundled, as pivotal training writes it."""
    g = torch.Generator().manual_seed(0)
    lora = LoraFile()
    suffixes = {"unet": ("attn2.to_k", "attn2.to_v", "attn1.to_q"), "text_encoder": ("q_proj", "fc1")}
    for component, ends in suffixes.items():
        for path, module in getattr(pipe, component).named_modules():
            if isinstance(module, torch.nn.Linear) and path.endswith(ends):
                down = torch.randn(4, module.in_features, generator=g) * 0.2
                up = torch.randn(module.out_features, 4, generator=g) * 0.2
                lora.add(component, path, LoraModule(down, up, 2.0, "linear"))
    dim = pipe.text_encoder.config.hidden_size
    lora.embeddings[TRIGGER] = [torch.randn(2, dim, generator=g) * 3]
    return lora


def _lorastudio_image(ws, lora_name: str) -> np.ndarray:
    from lorastudio.generate.config import GenerateConfig
    from lorastudio.service.generation import run_generation

    cfg = GenerateConfig(
        model="tiny-sd15",
        prompt=f"{PROMPT} <lora:{lora_name}:1>",
        sampler="Euler",
        steps=STEPS,
        cfg_scale=1.0,
        seed=SEED,
        width=SIZE,
        height=SIZE,
        device="cpu",
    )
    png = run_generation(ws, cfg).images[0].path
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)


def _diffusers_image(pipe) -> np.ndarray:
    image = pipe(
        PROMPT,
        num_inference_steps=STEPS,
        guidance_scale=1.0,  # no CFG, as lorastudio with cfg 1
        generator=torch.Generator().manual_seed(SEED),
        height=SIZE,
        width=SIZE,
        output_type="np",
    ).images[0]
    return (image * 255).round().astype(np.float32)


def _relative_error(got, ref) -> float:
    return float((got.double() - ref.double()).norm() / ref.double().norm())


# Float32 arithmetic on the same function lands far under 1e-3 (relative), whatever the CPU
# kernels: lorastudio patches W + BA where peft adds B(Ax) at run time, and the sums are
# taken in another order. A real mismatch (a missing module, a wrong alpha, a lost
# embedding) is of the order of the LoRA's effect, which each test measures beside it.
FLOAT32_SAME_FUNCTION = 1e-4


def _one_denoising_step(model, pipe, lora_weights: list, embeddings: dict) -> dict:
    """Text conditioning and one UNet prediction, in float, from lorastudio and from diffusers.

    Comparing whole images after several sampler steps would amplify rounding differences
    by an amount that depends on the machine (the tiny models are trained when they are
    built); one step in float is bounded by the arithmetic alone.
    """
    from lorastudio.adapters import applied_loras
    from lorastudio.generate.conditioning import PromptEncoder

    generator = torch.Generator().manual_seed(SEED)
    latents = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=generator)
    timestep = torch.tensor(pipe.scheduler.config.num_train_timesteps // 2)
    with torch.no_grad():
        theirs_text = pipe.encode_prompt(PROMPT, "cpu", 1, False)[0]
        theirs = pipe.unet(latents, timestep, encoder_hidden_states=theirs_text).sample
        with applied_loras(model.components, lora_weights):
            ours_text = PromptEncoder(model, embeddings=embeddings).encode(PROMPT).embeds
            ours = model.unet(latents, timestep, encoder_hidden_states=ours_text).sample
        theirs_unet = pipe.unet(latents, timestep, encoder_hidden_states=ours_text).sample
        plain_text = PromptEncoder(model).encode(PROMPT).embeds  # no LoRA, trigger as plain words
        base = model.unet(latents, timestep, encoder_hidden_states=plain_text).sample
    return {
        "text": _relative_error(ours_text, theirs_text),
        "unet": _relative_error(ours, theirs),
        "unet_alone": _relative_error(ours, theirs_unet),  # the same text conditioning in both
        "effect": _relative_error(base, theirs),
    }


def _keys(path) -> set[str]:
    with safe_open(str(path), framework="pt") as handle:
        return set(handle.keys())


@pytest.mark.slow
def test_no_embeddings_export_loads_in_plain_diffusers_and_matches_lorastudio(
    cli, tiny_workspace, tiny_models_dir, sd15, tmp_path, one_torch_thread
):
    pipe = _plain_pipe(tiny_models_dir / "tiny-sd15")
    lora = _pivotal_lora(pipe)
    bundled = save_kohya(lora, tiny_workspace.loras / "pivot.safetensors", family="sd15")
    # what pivotal training puts in the library beside the LoRA: the trigger as an embedding
    for embedding in embeddings_from_lora(load_lora_file(bundled)):
        save_embedding(embedding, tiny_workspace.embeddings / f"{embedding.name}.safetensors", "sd15")
    ours = _lorastudio_image(tiny_workspace, "pivot")

    out = tmp_path / "export" / "pivot.safetensors"
    result = cli("export", bundled, "--to", "kohya", "--no-embeddings", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    embedding_file = tmp_path / "export" / f"{TRIGGER}.safetensors"
    assert info["embedding_files"] == [str(embedding_file)] and info["embeddings"] == []
    assert not any(k.startswith("bundle_emb.") for k in _keys(out))
    assert _keys(embedding_file) == {"emb_params"}  # A1111 / diffusers single-key layout
    assert torch.equal(load_embedding(embedding_file).vectors[0], lora.embeddings[TRIGGER][0])

    # Why the option exists: diffusers refuses the bundled file (a key without "lora"), before
    # it touches the pipeline.
    with pytest.raises(ValueError):
        pipe.load_lora_weights(str(bundled))
    pipe.load_lora_weights(str(out))
    lora_only = _diffusers_image(pipe)
    pipe.load_textual_inversion(str(embedding_file), token=TRIGGER)
    steps = [_one_denoising_step(sd15, pipe, [(lora, 1.0, 1.0)], {TRIGGER: lora.embeddings[TRIGGER]})]
    pipe.unload_lora_weights()
    embedding_only = _diffusers_image(pipe)
    as_diffusers = cli("export", bundled, "--to", "diffusers", "--out", tmp_path / "d" / "pivot.safetensors")
    assert as_diffusers.exit_code == 0, as_diffusers.output
    pipe.load_lora_weights(str(tmp_path / "d" / "pivot.safetensors"))  # the embedding is loaded already
    steps.append(_one_denoising_step(sd15, pipe, [(lora, 1.0, 1.0)], {TRIGGER: lora.embeddings[TRIGGER]}))

    # Both exported files matter: without either one, the image is far from lorastudio's.
    assert np.abs(ours - lora_only).mean() > 5 and np.abs(ours - embedding_only).mean() > 5
    # With both, plain diffusers computes lorastudio's function: the same text conditioning
    # and the same noise prediction up to float32 rounding, while the LoRA moves them far.
    # The diffusers-format export is the same function end to end: text conditioning and
    # noise prediction agree to float32 rounding, while the LoRA moves them far.
    kohya_step, diffusers_step = steps
    assert diffusers_step["text"] < FLOAT32_SAME_FUNCTION and diffusers_step["unet"] < FLOAT32_SAME_FUNCTION
    assert diffusers_step["effect"] > 100 * FLOAT32_SAME_FUNCTION, diffusers_step
    # The kohya file's UNet half is too. (diffusers 0.42's kohya reader maps text-encoder
    # `self_attn.*_proj` LoRAs to an old naming that its peft step then skips, beside
    # transformers 5: for plain diffusers, `--to diffusers` is the file to use.)
    assert kohya_step["unet_alone"] < FLOAT32_SAME_FUNCTION, kohya_step
    assert (tmp_path / "d" / f"{TRIGGER}.safetensors").is_file()


def _small_pivotal(path):
    lora = LoraFile()
    module = LoraModule(torch.randn(2, 32), torch.randn(32, 2), 1.0)
    lora.add("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", module)
    lora.embeddings[TRIGGER] = [torch.randn(2, 32)]
    return lora, save_kohya(lora, path, family="sd15")


@pytest.mark.parametrize("to", ["diffusers", "peft"])
def test_diffusers_and_peft_exports_write_the_embedding_beside_them(cli, tmp_path, to):
    lora, bundled = _small_pivotal(tmp_path / "pivot.safetensors")
    out = tmp_path / "out" / ("pivot.safetensors" if to == "diffusers" else "pivot-peft")

    result = cli("lora", "export", bundled, "--to", to, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    embedding_file = tmp_path / "out" / f"{TRIGGER}.safetensors"
    assert json.loads(result.stdout)["embedding_files"] == [str(embedding_file)]
    assert torch.equal(load_embedding(embedding_file).vectors[0], lora.embeddings[TRIGGER][0])
    assert load_lora_file(out).embeddings == {}


def test_kohya_export_keeps_the_bundle_unless_asked(cli, workspace, tmp_path):
    _, bundled = _small_pivotal(tmp_path / "pivot.safetensors")
    result = cli("export", bundled, "--to", "kohya", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["embeddings"] == [TRIGGER] and info["embedding_files"] == []
    assert info["path"] == str(workspace.exports / "pivot-kohya.safetensors")  # no --out: studio/exports
    assert f"bundle_emb.{TRIGGER}.string_to_param.*" in _keys(workspace.exports / "pivot-kohya.safetensors")
    assert "ComfyUI ignores" in info["warnings"][0] and "--no-embeddings" in info["warnings"][0]
    out = tmp_path / "k.safetensors"
    separate = cli("export", bundled, "--to", "kohya", "--no-embeddings", "--out", out, "--json")
    assert separate.exit_code == 0 and not json.loads(separate.stdout).get("warnings"), separate.output


def test_embedding_file_may_not_overwrite_the_lora(cli, tmp_path):
    _, source = _small_pivotal(tmp_path / f"{TRIGGER}.safetensors")
    before = source.read_bytes()

    result = cli("export", source, "--to", "diffusers", "--out", tmp_path / "d.safetensors")
    assert result.exit_code == 2 and "would overwrite that file" in result.output
    assert source.read_bytes() == before and not (tmp_path / "d.safetensors").exists()


def test_embedding_file_may_not_overwrite_another_lora_beside_it(cli, tmp_path):
    """Exported next to the source, the trigger's embedding file must not replace another LoRA that
    happens to be named like the trigger; an earlier export's embedding file is replaced."""
    _, source = _small_pivotal(tmp_path / "pivot.safetensors")
    _, other = _small_pivotal(tmp_path / f"{TRIGGER}.safetensors")
    before = other.read_bytes()
    result = cli("export", source, "--to", "diffusers", "--out", tmp_path / "pivot-diffusers.safetensors")
    assert result.exit_code == 2 and "would overwrite that file" in result.output
    assert other.read_bytes() == before and not (tmp_path / "pivot-diffusers.safetensors").exists()
    other.unlink()
    assert cli("export", source, "--to", "diffusers", "--out", tmp_path / "pivot-diffusers.safetensors").exit_code == 0
    again = cli("export", source, "--to", "peft", "--out", tmp_path / "pivot-peft")  # its embedding file: replaced
    assert again.exit_code == 0, again.output
    assert _keys(tmp_path / f"{TRIGGER}.safetensors") == {"emb_params"}


@pytest.mark.slow
def test_trained_lora_gives_the_same_image_in_plain_diffusers(
    tiny_workspace, tiny_models_dir, sd15, tmp_path, one_torch_thread
):
    """The issue's promise: a LoRA trained here, loaded by `load_lora_weights`, draws what we draw."""
    from lorastudio.service.training import run_training
    from training_helpers import tiny_train_config, write_images

    data = write_images(tmp_path / "red", [((220, 30 + 5 * i, 40), None) for i in range(4)])
    cfg = tiny_train_config(
        data,
        TRIGGER,
        "train.steps=8",
        "train.batch_size=2",
        "train.learning_rate=2e-2",
        "lora.targets=kohya",
        "lora.train_text_encoder=true",
        "scoring.enabled=false",
        "output.name=trained",
    )
    result = run_training(tiny_workspace, cfg, progress=False)
    ours = _lorastudio_image(tiny_workspace, "trained")
    pipe = _plain_pipe(tiny_models_dir / "tiny-sd15")
    before = _diffusers_image(pipe)
    pipe.load_lora_weights(result["library_lora"])
    theirs = _diffusers_image(pipe)
    assert np.abs(theirs - before).mean() > 5 and np.abs(ours - before).mean() > 5  # it changes the image
    # and it is the same function: the UNet half of the kohya file at one denoising step, and
    # the whole LoRA (text encoder too) through the diffusers-format export
    lora = load_lora_file(result["library_lora"])
    step = _one_denoising_step(sd15, pipe, [(lora, 1.0, 1.0)], {})
    assert step["unet_alone"] < FLOAT32_SAME_FUNCTION, step
    exported = tmp_path / "trained-diffusers.safetensors"
    save_diffusers(lora, exported)
    pipe.unload_lora_weights()
    pipe.load_lora_weights(str(exported))
    step = _one_denoising_step(sd15, pipe, [(lora, 1.0, 1.0)], {})
    assert step["text"] < FLOAT32_SAME_FUNCTION and step["unet"] < FLOAT32_SAME_FUNCTION, step
    assert step["effect"] > 100 * FLOAT32_SAME_FUNCTION, step


def test_an_export_inside_the_studio_loras_puts_the_embedding_in_embeddings(cli, workspace):
    """`lora export pivot --no-embeddings --out studio/loras/...` (kohya, the one layout loras/ takes):
    the trigger's file goes to embeddings/ (in loras/ the studio and A1111 list it as a LoRA); the run's
    own copy there is replaced, another family's embedding of that trigger (another width) is kept."""
    lora, source = _small_pivotal(workspace.loras / "pivot.safetensors")
    out = workspace.loras / "again.safetensors"
    result = cli("lora", "export", "pivot", "--to", "kohya", "--no-embeddings", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    embedding_file = workspace.embeddings / f"{TRIGGER}.safetensors"
    assert json.loads(result.stdout)["embedding_files"] == [str(embedding_file)]
    assert torch.equal(load_embedding(embedding_file).vectors[0], lora.embeddings[TRIGGER][0])
    assert sorted(p.name for p in workspace.loras.iterdir()) == ["again.safetensors", "pivot.safetensors"]
    nested = workspace.loras / "chars" / "pivot-k.safetensors"
    nested_result = cli("lora", "export", source, "--to", "kohya", "--no-embeddings", "--out", nested, "--json")
    assert json.loads(nested_result.stdout)["embedding_files"] == [str(embedding_file)]  # a subfolder of loras/ too
    assert not (workspace.loras / "chars" / f"{TRIGGER}.safetensors").exists()

    save_embedding(Embedding(TRIGGER, [torch.randn(2, 48)]), embedding_file, "sd15")  # an SD2-wide one
    before = embedding_file.read_bytes()
    third = workspace.loras / "third.safetensors"
    result = cli("lora", "export", source, "--to", "kohya", "--no-embeddings", "--out", third)
    assert result.exit_code == 2 and "would overwrite that file" in result.output
    assert embedding_file.read_bytes() == before


def test_a_peft_export_keeps_the_loras_metadata_and_reads_back_as_its_family(cli, tmp_path):
    """`--to peft` wrote `{"format": "pt"}` only: the family, trigger and training facts were lost and
    a re-import needed --family. Each adapter file now carries the LoRA's metadata."""
    from lorastudio.adapters.detect import detect_lora_family
    from lorastudio.adapters.peft_format import load_peft_folder

    _, source = _small_pivotal(tmp_path / "pivot.safetensors")
    before = load_lora_file(source).metadata
    assert detect_lora_family(load_lora_file(source)).name == "sd15"
    result = cli("lora", "export", source, "--to", "peft", "--out", tmp_path / "pivot-peft")
    assert result.exit_code == 0, result.output
    back = load_peft_folder(tmp_path / "pivot-peft")
    assert {k: v for k, v in back.metadata.items() if k.startswith(("ss_", "modelspec."))} == {
        k: v for k, v in before.items() if k.startswith(("ss_", "modelspec."))
    }
    assert detect_lora_family(back).name == "sd15"

