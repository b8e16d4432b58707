"""UniPC as A1111 runs it (`generate.unipc`): its steps against diffusers' UniPC configured to the same algorithm
on the same times, a hand-computed first step on A1111's fractional times, img2img's window, the uni_pc_*
settings on every front, and lorastudio's UniPC from before (`old_unipc`)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.samplers import SamplerChoice, make_scheduler
from lorastudio.generate.unipc import A1111UniPCScheduler, UniPCSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = {  # SD 1.5's training schedule, epsilon prediction
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
}  # fmt: skip


def _model(x: torch.Tensor, t) -> torch.Tensor:
    """A smooth stand-in for a UNet's noise prediction, depending on the sample and the time."""
    return torch.sin(x * 1.3 + float(t) / 300.0) * 0.8 + 0.1 * x


def _walk(scheduler, x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for t in scheduler.timesteps:
        x = scheduler.step(_model(x, t), t, x).prev_sample
        out.append(x)
    return out


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize(("order", "lower_order_final"), [(1, True), (2, True), (3, True), (3, False)])
def test_every_step_matches_diffusers_unipc_set_to_a1111s_algorithm(variant, order, lower_order_final):
    """At 9 steps A1111's time_uniform times fall on whole timesteps (999, 888, ..., 111, then 0), where its
    interpolated schedule is the training one: diffusers' UniPC with A1111's settings (data prediction, the
    same order, variant and final order, its last step to timestep 0) must take the same steps."""
    from diffusers import UniPCMultistepScheduler

    ours = A1111UniPCScheduler.from_config(CONFIG, UniPCSettings(order, variant, "time_uniform", lower_order_final))
    ref = UniPCMultistepScheduler.from_config({
        **CONFIG, "solver_order": order, "solver_type": variant, "predict_x0": True,
        "lower_order_final": lower_order_final, "final_sigmas_type": "sigma_min", "timestep_spacing": "linspace",
    })  # fmt: skip
    ours.set_timesteps(9)
    ref.set_timesteps(9)
    assert ours.timesteps.tolist() == [999.0, 888.0, 777.0, 666.0, 555.0, 444.0, 333.0, 222.0, 111.0]
    assert ref.timesteps.tolist() == ours.timesteps.tolist()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    walked = _walk(ours, x.clone())
    for i, (a, b) in enumerate(zip(walked, _walk(ref, x.clone()), strict=True)):
        assert torch.allclose(a, b, atol=1e-4), (i, (a - b).abs().max())
    default = UniPCMultistepScheduler.from_config(CONFIG)  # diffusers' defaults: another picture
    default.set_timesteps(9)
    assert not torch.allclose(_walk(default, x.clone())[-1], walked[-1], atol=1e-2)


def test_the_first_step_is_ddim_on_a1111s_fractional_times():
    """20 steps: the model is called at (t - 1/1000) * 1000 for t evenly from 1 to 1/1000 (999, 949.05, ...),
    and the first step, at order 1, is DDIM / DPM-Solver++(1) with alpha from log(alpha) interpolated between
    the training steps."""
    scheduler = A1111UniPCScheduler.from_config(CONFIG)
    scheduler.set_timesteps(20)
    assert np.allclose(scheduler.timesteps.numpy(), 999 - 49.95 * np.arange(20), atol=1e-3)
    acp = scheduler.alphas_cumprod.double().numpy()

    def alpha_sigma(model_time: float) -> tuple[float, float]:
        log_alpha = np.interp(model_time, np.arange(1000), 0.5 * np.log(acp))
        return math.exp(log_alpha), math.sqrt(1 - math.exp(2 * log_alpha))

    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = _model(x, 999.0)
    (a0, s0), (a1, s1) = alpha_sigma(999.0), alpha_sigma(949.05)
    x0 = (x - s0 * eps) / a0
    expected = a1 * x0 + s1 * eps  # DDIM: the same noise at the next time
    got = scheduler.step(eps.float(), scheduler.timesteps[0], x.float()).prev_sample
    assert torch.allclose(got.double(), expected, atol=1e-4), (got - expected).abs().max()


def test_skip_types_orders_and_variants_take_other_steps():
    """Each of A1111's settings changes the path; every one ends finite."""
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    finals = {}
    for settings in (
        UniPCSettings(),
        UniPCSettings(order=2),
        UniPCSettings(order=1),
        UniPCSettings(variant="bh2"),
        UniPCSettings(variant="vary_coeff"),
        UniPCSettings(skip_type="logSNR"),
        UniPCSettings(skip_type="time_quadratic"),
        UniPCSettings(lower_order_final=False),
        UniPCSettings(order=50),  # more than the steps: the steps' count
    ):
        scheduler = A1111UniPCScheduler.from_config(CONFIG, settings)
        scheduler.set_timesteps(6)
        times = scheduler.timesteps
        assert times[0] == 999 and bool((times[1:] < times[:-1]).all()) and times[-1] > 0, settings
        finals[settings] = _walk(scheduler, x.clone())[-1]
        assert torch.isfinite(finals[settings]).all(), settings
    values = list(finals.values())
    assert torch.equal(values[-1], _walk(_set(UniPCSettings(order=6), 6), x.clone())[-1])
    for i, a in enumerate(values[:-1]):
        for b in values[i + 1 : -1]:
            assert not torch.allclose(a, b, atol=1e-4)


def _set(settings: UniPCSettings, steps: int) -> A1111UniPCScheduler:
    scheduler = A1111UniPCScheduler.from_config(CONFIG, settings)
    scheduler.set_timesteps(steps)
    return scheduler


def test_img2img_samples_a1111s_window():
    """20 steps at strength 0.5 (lorastudio's 11 steps of the schedule): A1111 noises the picture at DDIM
    timestep 501 and samples 10 UniPC steps from the DDIM timestep before it, 451, down to 0."""
    scheduler = _set(UniPCSettings(), 20)
    timesteps, noise_at = scheduler.img2img_window(11)
    assert noise_at.tolist() == [501] and len(timesteps) == 10
    assert np.allclose(timesteps.numpy(), 451 - 45.1 * np.arange(10), atol=1e-3)
    acp = float(scheduler.alphas_cumprod[501])
    clean, noise = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    assert torch.allclose(scheduler.add_noise(clean, noise, noise_at), clean * math.sqrt(acp))


def test_make_scheduler_picks_a1111s_unipc_unless_old_or_on_another_schedule():
    from diffusers import UniPCMultistepScheduler

    cfg = GenerateConfig(sampler="UniPC", unipc_order=2, unipc_variant="bh2")
    ours = make_scheduler(SamplerChoice("UniPC"), CONFIG, cfg)
    assert isinstance(ours, A1111UniPCScheduler) and ours.settings == UniPCSettings(2, "bh2")
    old = make_scheduler(SamplerChoice("UniPC"), CONFIG, cfg.model_copy(update={"old_unipc": True}))
    karras = make_scheduler(SamplerChoice("UniPC", "Karras"), CONFIG, cfg)
    for scheduler in (old, karras):  # diffusers' UniPC with its defaults, as lorastudio sampled it before
        assert type(scheduler) is UniPCMultistepScheduler and scheduler.config.solver_order == 2
        assert scheduler.config.solver_type == "bh2"
    assert karras.config.use_karras_sigmas


def _run(model, **fields) -> np.ndarray:
    from lorastudio.generate.conditioning import PromptEncoder
    from lorastudio.generate.pipeline import build_plan, generate_images

    cfg = GenerateConfig(**{"model": model.name, "prompt": "red", "steps": 5, "seed": 3, "width": 64, "height": 64,
                            "sampler": "UniPC", **fields})  # fmt: skip
    plan = build_plan(cfg, model, cfg.prompt, cfg.negative_prompt)
    images = generate_images(model, cfg, plan, PromptEncoder(model, 1))
    return np.stack([np.asarray(item.image, dtype=np.float32) for item in images])


def test_the_settings_change_the_picture(sd15):
    base = _run(sd15)
    assert np.array_equal(base, _run(sd15))
    for change in ({"unipc_order": 2}, {"unipc_variant": "bh2"}, {"unipc_skip_type": "logSNR"}, {"old_unipc": True}):
        assert np.abs(_run(sd15, **change) - base).mean() > 0.05, change


def test_img2img_and_hires_run(sd15, tmp_path):
    init = tmp_path / "init.png"
    Image.new("RGB", (64, 64), (200, 40, 40)).save(init)
    out = _run(sd15, init_image=str(init), strength=0.5)
    assert np.isfinite(out).all() and out.std() > 0
    assert np.abs(_run(sd15, init_image=str(init), strength=0.8) - out).mean() > 0.05
    hires = _run(sd15, hires_scale=1.5, hires_strength=0.5, hires_steps=3)
    assert hires.shape[1:3] == (96, 96)


def test_infotext_writes_what_differs_from_a1111s_defaults_and_reads_it_back():
    from lorastudio.generate.a1111_fields import InfotextFacts, config_fields_from_infotext, infotext_params

    facts = InfotextFacts("UniPC", "Automatic", 64, 64, 1)
    written = lambda cfg: {k: v for k, v in infotext_params(cfg, facts).items() if v is not None}  # noqa: E731
    assert not any(k.startswith("UniPC") or k == "Old UniPC" for k in written(GenerateConfig(sampler="UniPC")))
    cfg = GenerateConfig(
        sampler="UniPC", unipc_order=2, unipc_variant="bh2", unipc_skip_type="logSNR", unipc_lower_order_final=False
    )
    params = written(cfg)
    assert {k: params[k] for k in params if k.startswith("UniPC")} == {
        "UniPC variant": "bh2", "UniPC skip type": "logSNR", "UniPC order": 2, "UniPC lower order final": False,
    }  # fmt: skip
    back = config_fields_from_infotext({k: str(v) for k, v in params.items()})
    unipc = {"unipc_order", "unipc_variant", "unipc_skip_type", "unipc_lower_order_final", "old_unipc"}
    assert GenerateConfig(**back).model_dump(include=unipc) == cfg.model_dump(include=unipc)
    assert not any(k.startswith("UniPC") for k in written(cfg.model_copy(update={"sampler": "Euler a"})))
    old = written(cfg.model_copy(update={"old_unipc": True}))
    assert old["Old UniPC"] is True and not any(k.startswith("UniPC") for k in old)
    assert config_fields_from_infotext({"Old UniPC": "True"})["old_unipc"] is True


def test_the_unipc_keys_follow_the_hires_pass_as_the_pipeline_picks_its_sampler():
    """The hires pass samples A1111's UniPC where its sampler and schedule, each its own or the first pass's, are
    UniPC on its own schedule (`plan.hires_sampler_choice`): `UniPC Karras` + `Hires schedule type: Automatic`
    writes the UniPC keys (and `Old UniPC`), `Euler Karras` + `Hires sampler: UniPC` (diffusers' UniPC on the
    inherited Karras) writes none; before, only a named hires sampler was looked at, on its own."""
    from lorastudio.generate.a1111_fields import InfotextFacts, infotext_params

    def unipc_keys(**fields) -> set[str]:
        cfg = GenerateConfig(hires_scale=2, unipc_order=2, **fields)
        facts = InfotextFacts(cfg.sampler, cfg.schedule or "Automatic", 64, 64, 1)
        written = {k for k, v in infotext_params(cfg, facts).items() if v is not None}
        return {k for k in written if k.startswith(("UniPC", "Old UniPC"))}

    assert unipc_keys(sampler="UniPC", schedule="Karras", hires_schedule="Automatic") == {"UniPC order"}
    assert unipc_keys(sampler="UniPC", schedule="Karras", hires_schedule="Uniform", old_unipc=True) == {"Old UniPC"}
    assert unipc_keys(sampler="Euler", schedule="Karras", hires_sampler="UniPC") == set()
    assert unipc_keys(sampler="Euler", hires_sampler="UniPC") == {"UniPC order"}
    assert unipc_keys(sampler="UniPC", schedule="Karras") == set()


def test_the_infotext_reads_the_unipc_words_in_any_case():
    """`UniPC skip type: logsnr` or `UniPC variant: BH2` is read into the config's spelling, as A1111's API reads its
    uni_pc_* options; before, it was passed through and refused. A word UniPC lacks is one line naming the key."""
    from lorastudio.errors import LorastudioError
    from lorastudio.generate.a1111_fields import config_fields_from_infotext

    back = config_fields_from_infotext({"UniPC variant": "BH2", "UniPC skip type": "logsnr"})
    assert (back["unipc_variant"], back["unipc_skip_type"]) == ("bh2", "logSNR")
    cfg = GenerateConfig(sampler="UniPC", **{k: back[k] for k in ("unipc_variant", "unipc_skip_type")})
    assert (cfg.unipc_variant, cfg.unipc_skip_type) == ("bh2", "logSNR")
    assert config_fields_from_infotext({"UniPC skip type": "Time_Quadratic"})["unipc_skip_type"] == "time_quadratic"
    with pytest.raises(LorastudioError, match="UniPC variant.*bh3.*bh1, bh2, vary_coeff"):
        config_fields_from_infotext({"UniPC variant": "bh3"})


def test_recipes_bring_back_old_unipc_images(tiny_workspace, tmp_path):
    """A lorastudio image from before `RNG` or one saying `Old UniPC: True` (and a YAML recipe without
    `unipc_order`) was sampled with diffusers' UniPC: its recipe turns `old_unipc` on; A1111's and today's don't."""
    from lorastudio.generate.infotext import save_png
    from lorastudio.service.recipes import read_recipe

    common = "red\nSteps: 3, Sampler: UniPC, Seed: 4, Size: 64x64, Model: tiny-sd15"
    cases = {
        "before.png": (", Version: lorastudio 0.1.0", True),
        "flagged.png": (", RNG: CPU, Old UniPC: True, Version: lorastudio 0.1.0", True),
        "a1111.png": (", UniPC order: 2, UniPC variant: bh2, Version: v1.10.1", False),
    }
    for name, (keys, old) in cases.items():
        image = save_png(Image.new("RGB", (8, 8)), tmp_path / name, common + keys)
        assert read_recipe(image, tiny_workspace).config.old_unipc is old, name
    a1111 = read_recipe(tmp_path / "a1111.png", tiny_workspace).config
    assert (a1111.unipc_order, a1111.unipc_variant) == (2, "bh2")
    request = GenerateConfig(model="tiny-sd15", sampler="UniPC", steps=3, width=64, height=64, seed=4).model_dump()
    for drop, old in ((("unipc_order", "old_unipc"), True), ((), False)):
        data = {"request": {k: v for k, v in request.items() if k not in drop}}
        (tmp_path / "r.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        assert read_recipe(tmp_path / "r.yaml", tiny_workspace).config.old_unipc is old, drop


def test_the_a1111_api_takes_the_uni_pc_options(client):
    """override_settings and /options set uni_pc_order (1..50), uni_pc_variant, uni_pc_skip_type and
    uni_pc_lower_order_final, with A1111's defaults; the infotext says what differs from them."""
    body = {"prompt": "red", "steps": 3, "width": 64, "height": 64, "seed": 3, "sampler_name": "UniPC"}
    options = client.get("/sdapi/v1/options").json()
    assert (options["uni_pc_order"], options["uni_pc_variant"], options["uni_pc_skip_type"]) == (3, "bh1", "time_uniform")
    assert options["uni_pc_lower_order_final"] is True
    settings = {"uni_pc_order": 2, "uni_pc_variant": "BH2", "uni_pc_skip_type": "logsnr", "uni_pc_lower_order_final": False}
    answer = client.post("/sdapi/v1/txt2img", json={**body, "override_settings": settings})
    assert answer.status_code == 200, answer.text
    text = json.loads(answer.json()["info"])["infotexts"][0]
    for part in ("UniPC variant: bh2", "UniPC skip type: logSNR", "UniPC order: 2", "UniPC lower order final: False"):
        assert part in text, text
    for bad in ({"uni_pc_order": 0}, {"uni_pc_order": 51}, {"uni_pc_variant": "bh3"}, {"uni_pc_lower_order_final": 1}):
        refused = client.post("/sdapi/v1/txt2img", json={**body, "override_settings": bad})
        assert refused.status_code == 422 and next(iter(bad)) in refused.text, bad
    assert client.post("/sdapi/v1/options", json={"uni_pc_order": 1}).status_code == 200
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert "UniPC order: 1" in json.loads(answer.json()["info"])["infotexts"][0]


def test_a1111s_unipc_order_axis_is_a_grid_axis():
    from lorastudio.generate.grid_axes import find_axis

    assert find_axis("UniPC Order").name == "unipc_order" and find_axis("uni_pc_order").name == "unipc_order"


def test_the_unipc_order_axis_clamps_to_steps_minus_one_as_a1111(tiny_workspace):
    """A1111's UniPC Order axis sets min(value, steps - 1), with the cell's steps as the axes before it left them
    (x, then y, then z); the cell records that order, the one it samples at (the sampler takes any order up to the
    pass's steps, so before, `5` on 4 steps sampled at 4 and was recorded as 5)."""
    from lorastudio.service.grid_plan import plan_cells
    from lorastudio.service.grid_request import AxisRequest, GridRequest

    base = GenerateConfig(prompt="red", model="tiny-sd15", sampler="UniPC", steps=4, seed=1, width=64, height=64)
    order = lambda x, y=AxisRequest(): [c.config.unipc_order for c in plan_cells(tiny_workspace, base, GridRequest(x=x, y=y))[0]]  # noqa: E731
    assert order(AxisRequest(axis="UniPC Order", values="1, 2, 3, 5")) == [1, 2, 3, 3]
    steps_first = order(AxisRequest(axis="Steps", values="2, 8"), AxisRequest(axis="UniPC Order", values="5"))
    assert steps_first == [1, 5]
    assert order(AxisRequest(axis="UniPC Order", values="5"), AxisRequest(axis="Steps", values="2, 8")) == [3, 3]


def test_the_sampler_and_the_config_spell_the_settings_alike():
    from lorastudio.generate import config, unipc

    assert (unipc.UNIPC_VARIANTS, unipc.UNIPC_SKIP_TYPES) == (config.UNIPC_VARIANTS, config.UNIPC_SKIP_TYPES)


@pytest.mark.slow
def test_png_info_sends_the_unipc_settings_to_the_web_form_and_the_form_generates_with_them(tiny_workspace, tmp_path):
    """The web form has UniPC's settings and `old_unipc` (PNG info's paste fills them, as A1111's paste
    sets its uni_pc_* options); before, they were left out of the form and a pasted image's were lost."""
    from lorastudio.generate.infotext import save_png
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.ui.app import build_blocks
    from lorastudio.ui.generate_run import form_config
    from lorastudio.ui.i18n import translator
    from lorastudio.ui.tabs.generate import FORM_FIELDS

    text = ("red\nSteps: 3, Sampler: UniPC, Seed: 4, Size: 64x64, Model: tiny-sd15, UniPC variant: bh2, "
            "UniPC skip type: logSNR, UniPC order: 2, UniPC lower order final: False, RNG: CPU, Old UniPC: True")  # fmt: skip
    image = save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", text)
    studio = Studio(tiny_workspace, StudioSettings())
    try:
        blocks = build_blocks(studio, "en")
    finally:
        studio.close()
    send = next(fn for fn in blocks.fns.values() if any(getattr(c, "elem_id", None) == "png-image" for c in fn.inputs)
                and any(getattr(c, "elem_id", None) == "field-prompt" for c in fn.outputs))  # fmt: skip
    answer = dict(zip((getattr(c, "elem_id", None) for c in send.outputs), send.fn(str(image), "tiny-sd15"), strict=True))
    pasted = {"unipc_order": 2, "unipc_variant": "bh2", "unipc_skip_type": "logSNR", "unipc_lower_order_final": False,
              "old_unipc": True}  # fmt: skip
    for name, value in pasted.items():
        assert answer[f"field-{name}"]["value"] == value, name
    assert set(pasted) <= set(FORM_FIELDS)
    ctx = SimpleNamespace(studio=SimpleNamespace(workspace=tiny_workspace, model="tiny-sd15"), t=translator("en"))
    cfg = form_config(ctx, {"prompt": "red", "model": "tiny-sd15", "sampler": "UniPC", **pasted, "unipc_order": 2.0})
    assert {name: getattr(cfg, name) for name in pasted} == pasted
