"""Single files streamed into their modules (`models.single_file`) equal diffusers' `from_single_file`.

The fast path must give the same weights, bit for bit, as the plain one, in every family and
destination dtype; a layout it does not know falls back to diffusers instead of failing.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorastudio.adapters import save_single_file
from lorastudio.models.checkpoint import file_sha256
from lorastudio.models.families import get_family
from lorastudio.models.loading import _hash_cache_path, load_model
from lorastudio.models.single_file import read_single_file


def _single_file(tiny_models_dir, name: str, folder, dtype=torch.float16):
    model = load_model(name, tiny_models_dir, tiny_models_dir / ".cache")
    path = folder / f"{name}.safetensors"
    save_single_file(model.components, model.family, path, {"lorastudio.base_config": name}, dtype=dtype)
    return model, path


def _diffusers_load(family, path, config, dtype):
    import diffusers

    return getattr(diffusers, family.pipeline_class).from_single_file(
        str(path), config=str(config), dtype=dtype, local_files_only=True
    )


def _assert_same_module(ours: torch.nn.Module, theirs: torch.nn.Module, name: str) -> None:
    a, b = dict(ours.named_parameters()), dict(theirs.named_parameters())
    assert a.keys() == b.keys(), f"{name}: different parameters"
    for key, value in a.items():
        assert value.dtype == b[key].dtype, f"{name}.{key}: {value.dtype} vs {b[key].dtype}"
        assert torch.equal(value, b[key]), f"{name}.{key} differs"
    buffers_a, buffers_b = dict(ours.named_buffers()), dict(theirs.named_buffers())
    assert buffers_a.keys() == buffers_b.keys()
    for key, value in buffers_a.items():
        assert torch.equal(value, buffers_b[key]), f"{name} buffer {key} differs"


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sd2", "tiny-sdxl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_streamed_modules_equal_diffusers_from_single_file(tiny_models_dir, tmp_path, name, dtype):
    model, path = _single_file(tiny_models_dir, name, tmp_path)
    config = tiny_models_dir / name
    streamed = read_single_file(path, model.family, config, dtype, "cpu")
    assert streamed is not None, "the tables should know every shipped family's layout"
    pipe = _diffusers_load(model.family, path, config, dtype)
    for component in ("unet", "vae", *model.family.text_encoders):
        _assert_same_module(streamed.components[component], getattr(pipe, component), component)


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sd2", "tiny-sdxl"])
def test_text_widths_peeked_from_a_file_or_a_folder_are_the_loaded_encoders(tiny_models_dir, tmp_path, name):
    """What the trainer's trigger check compares an existing embedding with, before any load."""
    from lorastudio.models.loading import ModelRef, peek_text_widths

    model, path = _single_file(tiny_models_dir, name, tmp_path)
    loaded = tuple(encoder.get_input_embeddings().weight.shape[-1] for encoder in model.text_encoders)
    assert peek_text_widths(ModelRef(name, path, "single_file"), model.family) == loaded
    assert peek_text_widths(ModelRef(name, tiny_models_dir / name, "folder"), model.family) == loaded


def test_fp32_file_weights_land_unconverted_and_own_their_memory(tiny_models_dir, tmp_path):
    """fp32 read into fp32 is read straight into place; OpenCLIP's fused q/k/v become three tensors."""
    model, path = _single_file(tiny_models_dir, "tiny-sdxl", tmp_path, dtype=None)
    streamed = read_single_file(path, model.family, tiny_models_dir / "tiny-sdxl", torch.float32, "cpu")
    attention = streamed.components["text_encoder_2"].text_model.encoder.layers[0].self_attn
    pointers = {p.weight.untyped_storage().data_ptr() for p in (attention.q_proj, attention.k_proj, attention.v_proj)}
    assert len(pointers) == 3
    assert torch.equal(attention.q_proj.weight, model.text_encoders[1].text_model.encoder.layers[0].self_attn.q_proj.weight)
    # Every parameter is a tensor of its own (nothing keeps the file or a whole fused tensor alive).
    storages = [p.untyped_storage().data_ptr() for m in streamed.components.values() for p in m.parameters()]
    assert len(storages) == len(set(storages))


def test_first_load_records_the_file_hash_read_beside_it(tiny_models_dir, tmp_path):
    model, path = _single_file(tiny_models_dir, "tiny-sd15", tmp_path)
    cache = tmp_path / "cache"
    loaded = load_model(str(path), tiny_models_dir, cache)
    assert loaded.sha256 == file_sha256(path)
    assert _hash_cache_path(path, cache).read_text() == loaded.sha256
    # The weights equal the model the file was written from (fp16 in the file, fp32 loaded).
    for name, param in loaded.unet.named_parameters():
        assert torch.equal(param, dict(model.unet.named_parameters())[name].half().float()), name


def test_old_clip_names_without_text_model_load_like_the_new_ones(tiny_models_dir, tmp_path):
    """Files from before transformers 4.x name CLIP `cond_stage_model.transformer.encoder...`
    (A1111 renames them on load; diffusers does not read them at all)."""
    _, path = _single_file(tiny_models_dir, "tiny-sd15", tmp_path)
    prefix = "cond_stage_model.transformer.text_model."
    old_style = {
        (key.replace(prefix, "cond_stage_model.transformer.") if key.startswith(prefix) else key): value
        for key, value in load_file(str(path)).items()
    }
    old_path = tmp_path / "old-style.safetensors"
    save_file(old_style, str(old_path), metadata={"lorastudio.base_config": "tiny-sd15"})
    loaded = load_model(str(old_path), tiny_models_dir, tmp_path / "cache")
    reference = load_model(str(path), tiny_models_dir, tmp_path / "cache")
    _assert_same_module(loaded.text_encoders[0], reference.text_encoders[0], "text_encoder")


def test_a_layout_outside_the_tables_falls_back_to_diffusers(tiny_models_dir, tmp_path, caplog, monkeypatch):
    import lorastudio.models.single_file as single_file

    _, path = _single_file(tiny_models_dir, "tiny-sd15", tmp_path)
    reference = load_model(str(path), tiny_models_dir, tmp_path / "cache")
    monkeypatch.setattr(single_file, "vae_path_to_ldm", lambda key, up_blocks: "renamed." + key)
    with caplog.at_level(logging.INFO, logger="lorastudio.models.single_file"):
        loaded = load_model(str(path), tiny_models_dir, tmp_path / "cache")
    assert "using diffusers' converter" in caplog.text
    for name in ("unet", "vae", "text_encoder"):
        _assert_same_module(loaded.components[name], reference.components[name], name)


def test_a_module_another_thread_builds_during_a_load_keeps_its_weights(tiny_models_dir, tmp_path, monkeypatch):
    """The empty modules are built on the meta device for the loading thread only: a module built
    meanwhile elsewhere (an annotator for a preview) has real weights, initialised."""
    import threading

    import lorastudio.models.single_file as single_file

    model, path = _single_file(tiny_models_dir, "tiny-sd15", tmp_path)
    real_class, built = single_file.component_class, {}

    def build_elsewhere_meanwhile(index, name):
        if name == "vae":  # the loading thread is inside its meta-device block now
            worker = threading.Thread(target=lambda: built.setdefault("linear", torch.nn.Linear(8, 8)))
            worker.start()
            worker.join()
        return real_class(index, name)

    monkeypatch.setattr(single_file, "component_class", build_elsewhere_meanwhile)
    streamed = read_single_file(path, model.family, tiny_models_dir / "tiny-sd15", torch.float32, "cpu")
    assert streamed is not None
    weight = built["linear"].weight
    assert weight.device.type == "cpu" and float(weight.abs().sum()) > 0
    positions = dict(streamed.components["text_encoder"].named_buffers())["embeddings.position_ids"]
    assert positions.device.type == "cpu" and positions.tolist() == [list(range(positions.shape[1]))]


def test_a_module_with_a_buffer_the_reader_cannot_fill_loads_through_diffusers(tiny_models_dir, tmp_path, caplog, monkeypatch):
    import lorastudio.models.single_file as single_file

    _, path = _single_file(tiny_models_dir, "tiny-sd15", tmp_path)
    reference = load_model(str(path), tiny_models_dir, tmp_path / "cache")
    real_class = single_file.component_class

    def with_a_new_buffer(index, name):
        cls = real_class(index, name)
        if name != "vae":
            return cls

        class VaeWithTable(cls):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.register_buffer("table", torch.ones(3), persistent=False)

        return VaeWithTable

    monkeypatch.setattr(single_file, "component_class", with_a_new_buffer)
    with caplog.at_level(logging.INFO, logger="lorastudio.models.single_file"):
        loaded = load_model(str(path), tiny_models_dir, tmp_path / "cache")
    assert "buffer 'table' has no known value" in caplog.text and "using diffusers' converter" in caplog.text
    _assert_same_module(loaded.components["vae"], reference.components["vae"], "vae")


def test_a_file_with_a_tensor_of_another_size_is_refused_by_the_fallback_too(tiny_models_dir, tmp_path):
    from lorastudio.errors import LorastudioError

    _, path = _single_file(tiny_models_dir, "tiny-sd15", tmp_path)
    tensors = load_file(str(path))
    key = "model.diffusion_model.out.2.weight"
    tensors[key] = torch.zeros(tensors[key].shape[0] + 1, *tensors[key].shape[1:], dtype=tensors[key].dtype)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"lorastudio.base_config": "tiny-sd15"})
    assert read_single_file(bad, get_family("sd15"), tiny_models_dir / "tiny-sd15", torch.float32, "cpu") is None
    with pytest.raises((LorastudioError, RuntimeError, ValueError)):
        load_model(str(bad), tiny_models_dir, tmp_path / "cache")


@pytest.mark.parametrize("name", ["tiny-sd15", "tiny-sd2", "tiny-sdxl"])
def test_diffusers_folders_stream_into_the_modules_from_pretrained_builds(tiny_models_dir, name):
    import diffusers

    from lorastudio.models.loading import _family_of_folder
    from lorastudio.models.single_file import read_diffusers_folder

    folder = tiny_models_dir / name
    family = _family_of_folder(folder)
    streamed = read_diffusers_folder(folder, family, torch.float32, "cpu")
    assert streamed is not None, "a plain diffusers folder streams"
    pipe = getattr(diffusers, family.pipeline_class).from_pretrained(
        str(folder), dtype=torch.float32, local_files_only=True
    )
    for component in ("unet", "vae", *family.text_encoders):
        _assert_same_module(streamed.components[component], getattr(pipe, component), component)
    loaded = load_model(name, tiny_models_dir, tiny_models_dir / ".cache")
    assert loaded.scheduler_config == dict(pipe.scheduler.config)
    assert [type(t).__name__ for t in loaded.tokenizers] == [
        type(pipe.tokenizer).__name__, *([type(pipe.tokenizer_2).__name__] if len(family.text_encoders) > 1 else [])
    ]


def test_a_folder_the_reader_cannot_build_loads_through_diffusers(tiny_models_dir):
    """Kolors' ChatGLM is not a class the streamed reader builds: diffusers loads the folder."""
    from lorastudio.models.loading import _family_of_folder
    from lorastudio.models.single_file import read_diffusers_folder

    folder = tiny_models_dir / "tiny-kolors"
    assert read_diffusers_folder(folder, _family_of_folder(folder), torch.float32, "cpu") is None
    loaded = load_model("tiny-kolors", tiny_models_dir, tiny_models_dir / ".cache")
    assert loaded.family.name == "kolors" and not any(p.is_meta for p in loaded.unet.parameters())


def test_a_checkpoint_without_a_vae_loads_with_the_vae_given_and_says_so_without(tiny_models_dir, tmp_path):
    """Pruned civitai files leave the VAE out for the user to pick one: with `--vae` the file loads
    (the same weights as the whole file with that VAE); without it, one line says to pass one."""
    from lorastudio.errors import LorastudioError

    model, whole = _single_file(tiny_models_dir, "tiny-sd15", tmp_path, dtype=torch.float32)
    without = tmp_path / "no-vae.safetensors"
    tensors = {k: v for k, v in load_file(str(whole)).items() if not k.startswith("first_stage_model.")}
    save_file(tensors, str(without), {"lorastudio.base_config": "tiny-sd15"})
    with pytest.raises(LorastudioError, match="has no VAE; pass one with --vae"):
        load_model(str(without), tiny_models_dir, tiny_models_dir / ".cache")
    vae_folder = tiny_models_dir / "tiny-sd15" / "vae"
    loaded = load_model(str(without), tiny_models_dir, tiny_models_dir / ".cache", vae=vae_folder)
    assert loaded.vae_name == "vae"
    for name in ("unet", "vae", "text_encoder"):
        _assert_same_module(loaded.components[name], model.components[name], name)
    vae_file = tmp_path / "vae-ft.safetensors"  # a VAE as A1111 users keep it: one LDM-named file
    save_file({k.removeprefix("first_stage_model."): v for k, v in load_file(str(whole)).items()
               if k.startswith("first_stage_model.")}, str(vae_file))  # fmt: skip
    from_file = load_model(str(without), tiny_models_dir, tiny_models_dir / ".cache", vae=vae_file)
    _assert_same_module(from_file.vae, model.vae, "vae")
