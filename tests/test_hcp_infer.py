"""HCP-Diffusion's inference side (seed 003, 模型推理): its `{word:1.2}` weights said, not silently read as
text; its `name-STEP.pt` trigger embeddings read without unpickling code; its infer yaml read as a recipe."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from lorastudio.cli import _register, app

_register()
runner = CliRunner()

BRACE_NOTE = (
    "{surtr_arknights-1000:1.2} is HCP-Diffusion's weight syntax; A1111 reads braces as text: write"
    " (surtr_arknights-1000:1.2)"
)
SEP = ".___."
TE_PATH = "text_model.encoder.layers.0.self_attn.q_proj"
UNET_PATH = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"


def gen(*args: str) -> dict:
    result = runner.invoke(app, ["generate", "--model", "tiny-sd15", "--steps", "3", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def arr(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def hcp_embedding(path, vectors, parameter: bool = True) -> None:
    """An embedding as HCP-Diffusion's create_embedding / checkpoints write it: `{'string_to_param':
    {'*': vectors}, 'name': stem}` (the vectors an nn.Parameter where a training run saved them)."""
    vectors = torch.nn.Parameter(vectors) if parameter else vectors
    torch.save({"string_to_param": {"*": vectors}, "name": path.stem}, path)


def hcp_pair(folder, steps: int = 1000) -> None:
    """HCP's `unet-N` / `text_encoder-N` LoRA files of tiny-sd15 (widths 32), strong enough to show."""
    gen = torch.Generator().manual_seed(7)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, module, width in (("text_encoder", TE_PATH, 32), ("unet", UNET_PATH, 32)):
        in_features = 32 if stem == "text_encoder" else width
        state = {
            f"lora:{module}{SEP}layer.lora_down.weight": torch.randn(4, in_features, generator=gen),
            f"lora:{module}{SEP}layer.lora_up.weight": torch.randn(32, 4, generator=gen),
            f"lora:{module}{SEP}alpha": torch.tensor(0.5),
        }
        save_file(state, str(folder / f"{stem}-{steps}.safetensors"))


# What HCP's visualizer writes beside each image (`N-SEED-info.yaml`): the merged config, interpolations
# as written, the image's seed (cfgs/infer/anime/text2img_anime_lora.yaml over text2img_anime.yaml).
INFO_YAML = """\
pretrained_model: deepghs/tiny-sd15
prompt: 'masterpiece, best quality, 1girl, solo, {night}, {surtr_arknights-${model_steps}:1.2}, red_hair'
neg_prompt: 'lowres, bad anatomy, {blurry:1.1}'
out_dir: output/
emb_dir: '${exp_dir}/ckpts/'
N_repeats: 2
clip_skip: 1
bs: 2
num: 3
seed: 758691538
fp16: true
condition: null
save:
  save_cfg: true
  image_type: png
  quality: 95
infer_args:
  width: 512
  height: 768
  guidance_scale: 7.5
  num_inference_steps: 30
new_components:
  scheduler:
    _target_: diffusers.DPMSolverMultistepScheduler
    beta_start: 0.00085
    beta_end: 0.012
    algorithm_type: dpmsolver++
    beta_schedule: scaled_linear
    use_karras_sigmas: true
  vae:
    _target_: diffusers.AutoencoderKL.from_pretrained
    pretrained_model_name_or_path: deepghs/animefull-latest
    subfolder: vae
exp_dir: exps/2023-07-26-01-05-35
model_steps: 1000
output_dir: output/
encoder_attention_mask: false
merge:
  alpha: 0.85
  group1:
    type: unet
    base_model_alpha: 1.0
    lora:
      - path: '${.....exp_dir}/ckpts/unet-${.....model_steps}.safetensors'
        alpha: ${....alpha}
        layers: all
      - path: '${.....exp_dir}/ckpts/unet-neg-600.safetensors'
        alpha: 0.65
        layers: all
        mask: [0, 0.5]
    part: null
  group2:
    type: TE
    base_model_alpha: 1.0
    lora:
      - path: '${.....exp_dir}/ckpts/text_encoder-${.....model_steps}.safetensors'
        alpha: ${....alpha}
        layers: all
    part: null
interface:
  - _target_: hcpdiff.vis.DiskInterface
    show_steps: 0
    save_root: '${output_dir}'
"""


# -- 1. HCP's weight syntax: A1111's reading kept, and said ----------------------------------------


def test_the_brace_note_names_each_hcp_weight_and_its_a1111_spelling():
    from lorastudio.generate.hcp_syntax import a1111_from_hcp, hcp_weight_note

    assert hcp_weight_note(["masterpiece, best quality, 1girl, solo, {surtr_arknights-1000:1.2}"]) == BRACE_NOTE
    assert hcp_weight_note(["a {b:0.9}", "{c (d):1.3}, {e|f}, {plain}"]) == (
        "{b:0.9}, {c (d):1.3} are HCP-Diffusion's weight syntax; A1111 reads braces as text: write (b:0.9),"
        " (c \\(d\\):1.3)"
    )
    for a1111 in ("(word:1.2), [from:to:0.5]", "{red|blue} dynamic prompts", "{night}", "", None):
        assert hcp_weight_note([a1111]) is None
    assert a1111_from_hcp("{night}, {{x}:0.9}, a (b) [c]") == "(night), ((x):0.9), a \\(b\\) \\[c\\]"


def test_a_brace_weight_is_read_as_text_and_the_cli_json_says_so(tiny_workspace, one_torch_thread):
    braces = gen("--prompt", "red, {surtr_arknights-1000:1.2}", "--seed", "5")
    assert braces["notes"] == [BRACE_NOTE]
    info = json.loads(runner.invoke(app, ["pnginfo", braces["images"][0], "--json"]).stdout)
    assert info["Prompt"] == "red, {surtr_arknights-1000:1.2}"  # A1111's reading: the image reproduces there
    weighted = gen("--prompt", "red, (surtr_arknights-1000:1.2)", "--seed", "5")
    assert weighted["notes"] == []
    # the braces are tokens and the weight did nothing: another picture than A1111's weighting
    assert np.abs(arr(braces["images"][0]) - arr(weighted["images"][0])).mean() > 0.01
    plain = runner.invoke(app, ["generate", "--model", "tiny-sd15", "--steps", "2", "--prompt", "x {y:2}"])
    assert plain.exit_code == 0 and "note: {y:2} is HCP-Diffusion's weight syntax" in plain.output


def test_the_brace_note_reaches_the_rest_job_result_and_the_a1111_info(client, studio):
    body = {"steps": 2, "width": 64, "height": 64, "seed": 3, "negative_prompt": "{surtr_arknights-1000:1.2}"}
    job_id = client.post("/api/v1/jobs/generate", json={**body, "prompt": "red"}).json()["id"]
    job = studio.wait_job(job_id, timeout=120)
    assert job.state == "succeeded", job.error
    assert job.result["notes"] == [BRACE_NOTE]
    assert client.get(f"/api/v1/jobs/{job_id}").json()["result"]["notes"] == [BRACE_NOTE]
    answer = client.post("/sdapi/v1/txt2img", json={**body, "prompt": "red"})
    assert json.loads(answer.json()["info"])["notes"] == [BRACE_NOTE]


# -- HCP's trigger embeddings (`name-STEP.pt`) -----------------------------------------------------


def test_an_hcp_step_embedding_is_the_prompts_name_step_word(tiny_workspace, one_torch_thread):
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(3)) * 3
    hcp_embedding(tiny_workspace.embeddings / "surtr_arknights-1000.pt", vectors)
    plain = gen("--prompt", "red, (surtr_arknights-900:1.2)", "--seed", "2")
    used = gen("--prompt", "red, (surtr_arknights-1000:1.2)", "--seed", "2")
    assert np.abs(arr(used["images"][0]) - arr(plain["images"][0])).mean() > 0.1
    info = json.loads(runner.invoke(app, ["pnginfo", used["images"][0], "--json"]).stdout)
    assert info["TI hashes"].startswith("surtr_arknights-1000: ")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_an_hcp_embedding_is_read_weights_only_and_a_crafted_one_runs_nothing(tmp_path):
    from lorastudio.adapters import load_embedding
    from lorastudio.errors import UnsafeFileError

    vectors = torch.randn(4, 768)
    for parameter in (True, False):  # a run's checkpoint saves the nn.Parameter, create_embedding a tensor
        path = tmp_path / f"surtr_arknights-{1000 + parameter}.pt"
        hcp_embedding(path, vectors, parameter)
        embedding = load_embedding(path)
        assert embedding.name == path.stem and torch.equal(embedding.vectors[0], vectors)
        assert embedding.info == {"name": path.stem}
    marker = tmp_path / "pwned"
    crafted = tmp_path / "evil-1000.pt"
    torch.save({"string_to_param": {"*": _Payload(marker)}, "name": "evil-1000"}, crafted)
    with pytest.raises(UnsafeFileError, match="evil-1000.pt"):
        load_embedding(crafted)
    assert not marker.exists()  # never unpickled


# -- 2. HCP's infer yaml as a recipe ---------------------------------------------------------------


def test_an_hcp_info_yaml_becomes_the_request_it_describes(tiny_workspace, tmp_path):
    from lorastudio.service.loras import import_lora
    from lorastudio.service.recipes import read_recipe

    hcp_pair(tmp_path / "ckpts")
    assert import_lora(tiny_workspace, tmp_path / "ckpts" / "unet-1000.safetensors", family="sd15")["name"] == "1000"
    recipe = tmp_path / "1-758691538-info.yaml"
    recipe.write_text(INFO_YAML, encoding="utf-8")
    read = read_recipe(recipe, tiny_workspace)
    cfg = read.config
    assert cfg.prompt == (
        "masterpiece, best quality, 1girl, solo, (night), (surtr_arknights-1000:1.2), red_hair <lora:1000:0.85>"
    )
    assert cfg.negative_prompt == "lowres, bad anatomy, (blurry:1.1)"
    assert (cfg.model, cfg.width, cfg.height, cfg.cfg_scale, cfg.steps) == ("tiny-sd15", 512, 768, 7.5, 30)
    # the info beside one image makes that image (its run made num x bs = 3 x 2 from seed 758691538 on)
    assert (cfg.seed, cfg.count, cfg.batch_size, cfg.clip_skip) == (758691538, 1, 1, 2)
    assert (cfg.sampler, cfg.schedule) == ("DPM++ 2M", "Karras")
    texts = [note.text for note in read.notes]
    assert sorted(note.key for note in read.notes) == [
        "hcp_alike", "hcp_lora_missing", "hcp_not_mapped", "hcp_not_mapped", "hcp_prompt_weights",
        "hcp_trigger_missing",
    ]  # fmt: skip
    assert any("merge.group1.lora.1.mask (0, 0.5)" in text for text in texts)
    assert any("new_components.vae (" in text and "deepghs/animefull-latest" in text for text in texts)
    assert any(text.startswith("LoRA exps/2023-07-26-01-05-35/ckpts/unet-neg-600.safetensors") for text in texts)
    assert any(
        "trigger surtr_arknights-1000" in text and "exps/2023-07-26-01-05-35/ckpts/surtr_arknights-1000.pt" in text
        for text in texts
    )
    given = read_recipe(recipe, tiny_workspace, given={"vae", "sampler"})  # --vae, --sampler: no note on theirs
    assert not any("new_components" in note.text for note in given.notes) and given.config.sampler == "Euler a"
    # the trigger's .pt in embeddings/: no note; the LoRA copied in as HCP named it is found by that name
    hcp_embedding(tiny_workspace.embeddings / "surtr_arknights-1000.pt", torch.randn(2, 32))
    (tiny_workspace.loras / "1000.safetensors").unlink()
    for stem in ("unet-1000", "text_encoder-1000"):
        (tiny_workspace.loras / f"{stem}.safetensors").write_bytes((tmp_path / "ckpts" / f"{stem}.safetensors").read_bytes())
    again = read_recipe(recipe, tiny_workspace)
    assert again.config.prompt.endswith(" <lora:unet-1000:0.85>")
    assert "hcp_trigger_missing" not in {note.key for note in again.notes}


def test_an_hcp_config_keeps_its_run_and_an_image_info_makes_its_image(tiny_workspace, tmp_path):
    """`num`/`bs` in the info file beside one image are its run's: the image is made alone, from its seed;
    the same values in a config (`cfgs/infer/*.yaml`, or a file not named after its seed) are the run."""
    from lorastudio.service.recipes import read_recipe

    later = INFO_YAML.replace("seed: 758691538", "seed: 758691541")  # the run's fourth image
    for name, text, made in (
        ("4-758691541-info.yaml", later, (758691541, 1, 1)),
        ("text2img_anime_lora.yaml", INFO_YAML, (758691538, 3, 2)),
        ("4-758691541-info.yaml", INFO_YAML, (758691538, 3, 2)),  # its seed is not the name's: a config
    ):
        recipe = tmp_path / name
        recipe.write_text(text, encoding="utf-8")
        cfg = read_recipe(recipe, tiny_workspace).config
        assert (cfg.seed, cfg.count, cfg.batch_size) == made, name


def test_hcp_infer_yaml_edge_cases_are_one_note_or_one_line(tiny_workspace, tmp_path):
    from lorastudio.errors import LorastudioError
    from lorastudio.service.recipes import read_recipe

    root = tmp_path / "HCP-Diffusion"
    (root / "cfgs" / "infer" / "anime").mkdir(parents=True)
    (root / "cfgs" / "infer" / "text2img.yaml").write_text(textwrap.dedent("""\
        pretrained_model: ''
        neg_prompt: 'lowres'
        clip_skip: 0
        bs: 4
        num: 1
        seed: null
        infer_args: {width: 64, height: 64, guidance_scale: 7.5, num_inference_steps: 50}
        new_components:
          scheduler: {_target_: diffusers.EulerAncestralDiscreteScheduler, beta_start: 0.00085, beta_end: 0.012,
                      beta_schedule: scaled_linear, prediction_type: v_prediction}
        """), encoding="utf-8")  # fmt: skip
    child = root / "cfgs" / "infer" / "anime" / "mine.yaml"
    child.write_text(textwrap.dedent("""\
        _base_: [cfgs/infer/text2img.yaml, cfgs/infer/missing.yaml]
        pretrained_model: 'models/tiny-sd15'
        prompt: 'a {cat}, ${times:512,704}'
        infer_args: {num_inference_steps: 12, strength: 0.6}
        condition: {type: i2i, image: input.png}
        merge:
          group1:
            type: unet
            base_model_alpha: 0.9
            lora: [{path: 'exps/run/ckpts/unet-300.safetensors', alpha: 0.7}]
        """), encoding="utf-8")  # fmt: skip
    read = read_recipe(child, tiny_workspace)
    cfg = read.config
    # the base's values under the file's own, the scheduler from the base, HCP's clip skip 0 is A1111's 1
    assert (cfg.steps, cfg.width, cfg.batch_size, cfg.seed, cfg.clip_skip) == (12, 64, 4, -1, 1)
    assert (cfg.sampler, cfg.model, cfg.negative_prompt) == ("Euler a", "tiny-sd15", "lowres")
    assert cfg.prompt == "a (cat), ${times:512,704}"  # kept as written, with a note
    texts = " | ".join(note.text for note in read.notes)
    for said in (
        "_base_ config cfgs/infer/missing.yaml is not found",
        "prompt: ${times:512,704} cannot be resolved here (an HCP-Diffusion resolver, or a key the file lacks); kept",
        "infer_args.strength (0.6)",
        "condition (type=i2i, image=input.png)",
        "merge.group1.base_model_alpha (0.9)",
        "new_components.scheduler.prediction_type (v_prediction)",
        "LoRA exps/run/ckpts/unet-300.safetensors is not in this workspace's loras/ (looked for unet-300,",
    ):
        assert said in texts, said
    # a model this workspace lacks: one line, or the caller's model with a note
    child.write_text("pretrained_model: stablediffusionapi/anything-v5\nprompt: x\nneg_prompt: y\n", encoding="utf-8")
    with pytest.raises(LorastudioError, match="pretrained_model 'stablediffusionapi/anything-v5' is not in this"):
        read_recipe(child, tiny_workspace)
    kept = read_recipe(child, tiny_workspace, model="tiny-sd15")
    assert kept.config.model == "tiny-sd15" and "model_kept" in {note.key for note in kept.notes}
    child.write_text("pretrained_model: tiny-sd15\nneg_prompt: y\nbs: two\n", encoding="utf-8")
    with pytest.raises(LorastudioError, match=r"mine.yaml: bs: 'two' is not a whole number"):
        read_recipe(child, tiny_workspace)


def test_generate_recipe_reads_an_hcp_yaml_end_to_end(tiny_workspace, tmp_path, one_torch_thread):
    from lorastudio.service.loras import import_lora

    hcp_pair(tmp_path / "ckpts")
    import_lora(tiny_workspace, tmp_path / "ckpts" / "unet-1000.safetensors", name="surtr-1000", family="sd15")
    hcp_embedding(tiny_workspace.embeddings / "surtr_arknights-1000.pt", torch.randn(2, 32))
    small = INFO_YAML.replace("width: 512", "width: 64").replace("height: 768", "height: 64")
    small = small.replace("seed: 758691538", "seed: 758691539").replace("num_inference_steps: 30", "num_inference_steps: 3")
    small = small.replace("unet-${.....model_steps}", "unet-surtr-${.....model_steps}").replace(
        "text_encoder-${.....model_steps}", "text_encoder-surtr-${.....model_steps}"
    )  # imported under the name unet-surtr-1000 finds
    recipe = tmp_path / "2-758691539-info.yaml"  # the second image of a run of num 3 x bs 2: that image alone
    recipe.write_text(small, encoding="utf-8")
    result = runner.invoke(app, ["generate", "--recipe", str(recipe), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["seeds"] == [758691539] and len(out["images"]) == 1 and out["notes"] == []  # the braces were written as A1111's weights
    assert [lora["name"] for lora in out["loras"]] == ["surtr-1000"]
    info = json.loads(runner.invoke(app, ["pnginfo", out["images"][0], "--json"]).stdout)
    assert info["TI hashes"].startswith("surtr_arknights-1000: ") and info["Sampler"] == "DPM++ 2M"
    assert "recipe: HCP-Diffusion's new_components.vae" in result.output
