"""Generate: txt2img, img2img and hires fix, with live progress, Interrupt/Skip and the LoRA picker.

Every control is a `GenerateConfig` field (limits and tooltip from the field); pressing
Generate queues the same job the API's `POST /api/v1/jobs/generate` queues, then follows
it: queue position, step, ETA, the preview image, and at the end the images with their
infotext. Nothing here computes anything the service does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from lorastudio.generate.config import GenerateConfig
from lorastudio.service.series import SeriesRequest
from lorastudio.ui.context import UiContext, error_markup, owner_to_check, user_of
from lorastudio.ui.control_panel import build_control_panel, units_from_form
from lorastudio.ui.field_help import field_help
from lorastudio.ui.forms import field_control
from lorastudio.ui.generate_run import (
    OUTPUT_COUNT,
    follow_running,
    forget_lone_sub_grids,
    infotext_of,
    selected_image,
    selected_seed,
    size_from_picture,
    submit_and_follow,
    submit_grid_and_follow,
    submit_series_and_follow,
)
from lorastudio.ui.grid_panel import build_grid_panel, grid_request_from_form

if TYPE_CHECKING:
    from lorastudio.ui.i18n import Translator

TAB_ID = "generate"
LABEL = "tab.generate"

# Fields the form sends; the others keep GenerateConfig's defaults.
FORM_FIELDS = (
    "prompt", "negative_prompt", "model", "vae", "sampler", "schedule", "steps", "cfg_scale", "width", "height",
    "seed", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h", "batch_size", "count",
    "clip_skip", "eta", "pad_conds", "rng", "ensd", "pad_conds_v0", "old_prompt_editing", "old_step_noise",
    "unipc_order", "unipc_variant", "unipc_skip_type", "unipc_lower_order_final", "old_unipc", "hires_scale",
    "hires_resize_x", "hires_resize_y", "hires_steps", "hires_strength", "hires_upscaler", "hires_sampler",
    "hires_schedule", "hires_prompt", "hires_negative_prompt", "init_image", "strength", "resize_mode",
    "initial_noise_multiplier", "extra_noise",
    "mask_blur", "mask_invert", "inpainting_fill", "inpaint_only_masked", "inpaint_padding",
)  # fmt: skip
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")


def build(ctx: UiContext) -> None:
    from lorastudio.service.choices import (
        embedding_names,
        hires_upscaler_names,
        lora_names,
        model_names,
        sampler_names,
        style_names,
        vae_names,
    )

    t, prefs, ws = ctx.t, ctx.preferences, ctx.studio.workspace
    f: dict[str, Any] = {}
    with gr.Row():
        with gr.Column(scale=4):
            f["prompt"] = field_control(GenerateConfig, "prompt", t("generate.prompt"), lines=3)
            f["negative_prompt"] = field_control(
                GenerateConfig, "negative_prompt", t("generate.negative_prompt"), value=prefs.negative_prompt, lines=2
            )
        with gr.Column(scale=1, min_width=220):
            f["model"] = gr.Dropdown(
                model_names(ws), value=ctx.studio.model, label=t("generate.model"), elem_id="field-model"
            )
            f["vae"] = gr.Dropdown(
                [(t("generate.vae_automatic"), "")] + [(name, name) for name in vae_names(ws)],
                value="",
                label=t("generate.vae"),
                info=field_help(GenerateConfig, "vae"),
                elem_id="field-vae",
            )
            refresh = gr.Button(t("generate.refresh"), size="sm", elem_id="generate-refresh")
            run = gr.Button(t("generate.run"), variant="primary", elem_id="generate-run")
            with gr.Row():
                interrupt = gr.Button(t("generate.interrupt"), size="sm", elem_id="generate-interrupt")
                skip = gr.Button(t("generate.skip"), size="sm", elem_id="generate-skip")
            # A1111's styles: merged into the prompts when the job is queued, or now by the button
            styles = gr.Dropdown(
                style_names(ws), value=[], multiselect=True, label=t("generate.styles"), elem_id="styles"
            )
            apply_styles = gr.Button(t("generate.apply_styles"), size="sm", elem_id="apply-styles")
    with gr.Row():
        with gr.Column():
            with gr.Row():
                f["sampler"] = gr.Dropdown(
                    sampler_names(), value=prefs.sampler, label=t("generate.sampler"), elem_id="field-sampler"
                )
                f["schedule"] = gr.Dropdown(
                    schedule_choices(t), value="Automatic", label=t("generate.schedule"), elem_id="field-schedule"
                )
            f["steps"] = field_control(
                GenerateConfig, "steps", t("generate.steps"), value=prefs.steps, slider=True, maximum=150
            )
            f["cfg_scale"] = field_control(
                GenerateConfig, "cfg_scale", t("generate.cfg_scale"), value=prefs.cfg_scale, slider=True,
                maximum=30, step=0.5,
            )  # fmt: skip
            with gr.Row():
                f["width"] = field_control(GenerateConfig, "width", t("generate.width"), value=prefs.width, step=8)
                f["height"] = field_control(GenerateConfig, "height", t("generate.height"), value=prefs.height, step=8)
            with gr.Row():
                f["seed"] = field_control(GenerateConfig, "seed", t("generate.seed"), scale=3)
                random_seed = gr.Button(t("generate.random_seed"), size="sm", scale=1)
                reuse_seed = gr.Button(t("generate.reuse_seed"), size="sm", scale=1, elem_id="reuse-seed")
            with gr.Accordion(t("generate.subseed"), open=False):
                f["subseed"] = field_control(GenerateConfig, "subseed", t("generate.subseed"))
                f["subseed_strength"] = field_control(
                    GenerateConfig, "subseed_strength", t("generate.subseed_strength"), slider=True, step=0.01
                )
                with gr.Row():
                    f["seed_resize_from_w"] = field_control(
                        GenerateConfig, "seed_resize_from_w", t("generate.seed_resize_from_w")
                    )
                    f["seed_resize_from_h"] = field_control(
                        GenerateConfig, "seed_resize_from_h", t("generate.seed_resize_from_h")
                    )
            with gr.Row():
                f["batch_size"] = field_control(
                    GenerateConfig, "batch_size", t("generate.batch_size"), slider=True, maximum=8
                )
                f["count"] = field_control(GenerateConfig, "count", t("generate.count"), slider=True, maximum=16)
            with gr.Row():
                f["clip_skip"] = field_control(
                    GenerateConfig, "clip_skip", t("generate.clip_skip"), slider=True, scale=3
                )
                f["eta"] = field_control(GenerateConfig, "eta", t("generate.eta"), slider=True, step=0.01, scale=2)
            # its own line: the label and help overflowed a third of the sliders' row
            f["pad_conds"] = field_control(GenerateConfig, "pad_conds", t("generate.pad_conds"))
            with gr.Row():  # PNG info sets them from 'RNG' and 'ENSD'
                f["rng"] = field_control(GenerateConfig, "rng", t("generate.rng"))
                f["ensd"] = field_control(GenerateConfig, "ensd", t("generate.ensd"))
            with gr.Accordion(t("generate.unipc"), open=False):  # A1111's uni_pc_* settings; PNG info sets them
                with gr.Row():
                    for name in ("unipc_order", "unipc_variant", "unipc_skip_type", "unipc_lower_order_final"):
                        f[name] = field_control(GenerateConfig, name, t(f"generate.{name}"))
            with gr.Accordion(t("generate.compat"), open=False):  # set by PNG info for older webuis' images
                with gr.Row():
                    f["pad_conds_v0"] = field_control(GenerateConfig, "pad_conds_v0", t("generate.pad_conds_v0"))
                    f["old_prompt_editing"] = field_control(
                        GenerateConfig, "old_prompt_editing", t("generate.old_prompt_editing")
                    )
                # lorastudio's own images from before 'RNG' was written turn it on
                f["old_step_noise"] = field_control(GenerateConfig, "old_step_noise", t("generate.old_step_noise"))
                f["old_unipc"] = field_control(GenerateConfig, "old_unipc", t("generate.old_unipc"))
            with gr.Accordion(t("generate.hires"), open=False):
                f["hires_scale"] = field_control(
                    GenerateConfig, "hires_scale", t("generate.hires_scale"), slider=True, step=0.05
                )
                with gr.Row():  # A1111: a size given here replaces the factor
                    f["hires_resize_x"] = field_control(
                        GenerateConfig, "hires_resize_x", t("generate.hires_resize_x"), slider=True, step=8, maximum=2048
                    )
                    f["hires_resize_y"] = field_control(
                        GenerateConfig, "hires_resize_y", t("generate.hires_resize_y"), slider=True, step=8, maximum=2048
                    )
                f["hires_steps"] = field_control(
                    GenerateConfig, "hires_steps", t("generate.hires_steps"), slider=True, maximum=150
                )
                f["hires_strength"] = field_control(
                    GenerateConfig, "hires_strength", t("generate.hires_strength"), slider=True, step=0.01
                )
                f["hires_upscaler"] = gr.Dropdown(
                    hires_upscaler_names(ctx.studio.workspace), value="Latent", label=t("generate.hires_upscaler")
                )
                with gr.Row():  # A1111's "Use same sampler" / "Use same scheduler": the first pass's
                    f["hires_sampler"] = gr.Dropdown(
                        hires_sampler_choices(t), value=SAME_SAMPLER, label=t("generate.hires_sampler"),
                        info=field_help(GenerateConfig, "hires_sampler"), elem_id="field-hires-sampler",
                    )  # fmt: skip
                    f["hires_schedule"] = gr.Dropdown(
                        hires_schedule_choices(t), value=SAME_SCHEDULER, label=t("generate.hires_schedule"),
                        info=field_help(GenerateConfig, "hires_schedule"), elem_id="field-hires-schedule",
                    )  # fmt: skip
                f["hires_prompt"] = field_control(GenerateConfig, "hires_prompt", t("generate.hires_prompt"), lines=2)
                f["hires_negative_prompt"] = field_control(
                    GenerateConfig, "hires_negative_prompt", t("generate.hires_negative_prompt"), lines=2
                )
            with gr.Accordion(t("generate.img2img"), open=False, elem_id="img2img") as img2img:
                f["init_image"] = gr.Image(  # image_mode None: the file as sent (Gradio's RGB drops alpha to black)
                    type="filepath", image_mode=None, label=t("generate.init_image"), elem_id="init-image", height=256
                )
                f["strength"] = field_control(
                    GenerateConfig, "strength", t("generate.strength"), slider=True, step=0.01
                )
                f["resize_mode"] = gr.Dropdown(
                    [(name, index) for index, name in enumerate(RESIZE_MODES)],
                    value=0,
                    label=t("generate.resize_mode"),
                )
                with gr.Row():  # A1111's img2img settings, per request here
                    f["initial_noise_multiplier"] = field_control(
                        GenerateConfig, "initial_noise_multiplier", t("generate.initial_noise_multiplier"),
                        slider=True, step=0.001,
                    )  # fmt: skip
                    f["extra_noise"] = field_control(
                        GenerateConfig, "extra_noise", t("generate.extra_noise"), slider=True, step=0.01
                    )
                clear_image = gr.Button(t("generate.clear_image"), size="sm")
            with gr.Accordion(t("generate.inpaint"), open=False, elem_id="inpaint") as inpaint:
                painter = gr.ImageEditor(
                    type="pil",
                    label=t("generate.inpaint_painter"),
                    sources=("upload", "clipboard"),
                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=24),
                    transforms=(),
                    layers=False,
                    height=320,
                    elem_id="inpaint-painter",
                )
                f["mask_blur"] = field_control(GenerateConfig, "mask_blur", t("generate.mask_blur"), slider=True)
                f["inpainting_fill"] = gr.Dropdown(
                    [(name, index) for index, name in enumerate(MASKED_CONTENT)],
                    value=1,
                    label=t("generate.inpainting_fill"),
                    info=field_help(GenerateConfig, "inpainting_fill"),
                )
                f["mask_invert"] = field_control(GenerateConfig, "mask_invert", t("generate.mask_invert"))
                f["inpaint_only_masked"] = field_control(
                    GenerateConfig, "inpaint_only_masked", t("generate.inpaint_only_masked")
                )
                f["inpaint_padding"] = field_control(
                    GenerateConfig, "inpaint_padding", t("generate.inpaint_padding"), slider=True, maximum=256
                )
            control = build_control_panel(ctx)
            grid = build_grid_panel(ctx)
            with gr.Accordion(t("generate.story"), open=False, elem_id="story"):
                story_prompts = field_control(
                    SeriesRequest, "prompts", t("generate.story_prompts"), lines=6, elem_id="story-prompts"
                )
                story_seeds = field_control(SeriesRequest, "seed_policy", t("generate.story_seed_policy"))
                story_run = gr.Button(t("generate.story_run"), variant="primary", elem_id="story-run")
            with gr.Accordion(t("generate.networks"), open=False, elem_id="networks"):
                with gr.Row():
                    lora = gr.Dropdown(lora_names(ws), label=t("generate.lora"), elem_id="lora-picker", scale=3)
                    lora_weight = gr.Slider(-2, 2, value=1.0, step=0.05, label=t("generate.lora_weight"), scale=2)
                    add_lora = gr.Button(t("generate.add_lora"), size="sm", scale=1, elem_id="add-lora")
                with gr.Row():
                    lora_preview = gr.Image(
                        show_label=False, height=128, interactive=False, visible=False, elem_id="lora-preview"
                    )
                    lora_card = gr.Markdown(elem_id="lora-card")
                with gr.Row():
                    embedding = gr.Dropdown(embedding_names(ws), label=t("generate.embedding"), scale=3)
                    add_embedding = gr.Button(t("generate.add_embedding"), size="sm", scale=1)
        with gr.Column():
            progress = gr.Markdown(elem_id="progress-text")
            preview = gr.Image(label=t("generate.progress"), visible=False, height=256, elem_id="preview")
            gallery = gr.Gallery(label=t("generate.gallery"), columns=2, height=420, elem_id="gallery")
            infotext = gr.Textbox(
                label=t("generate.infotext"), lines=4, interactive=False, elem_id="infotext"
            )
            with gr.Row():
                send_img2img = gr.Button(t("generate.send_img2img"), size="sm", elem_id="send-img2img")
                send_inpaint = gr.Button(t("generate.send_inpaint"), size="sm", elem_id="send-inpaint")
                send_extras = gr.Button(t("generate.send_extras"), size="sm", elem_id="send-extras")
    selected = gr.State(0)  # the gallery's selected image (a new gallery: its first)
    images = gr.State([], delete_callback=forget_lone_sub_grids)  # a closed page's lone sub-grid goes

    ctx.shared["generate.fields"] = f
    ctx.shared["generate.img2img"] = img2img
    ctx.shared["generate.control"] = control  # PNG info's paste fills its units
    ctx.shared["generate.grid"] = grid  # and a grid image's X/Y/Z plot
    ctx.shared["generate.styles"] = styles  # and the styles its prompts hold
    ctx.shared["generate.send_extras"] = send_extras  # wired by the Extras tab, built later
    ctx.shared["generate.images"] = images
    ctx.shared["generate.selected"] = selected

    inputs = {f[name] for name in FORM_FIELDS}  # a set: Gradio passes one dict {control: value}

    inputs.add(painter)
    inputs.add(styles)
    inputs.add(images)  # the gallery's pictures, which the next ones replace
    inputs |= control.components()
    outputs = [progress, preview, gallery, infotext, selected, images]
    assert len(outputs) == OUTPUT_COUNT

    def generate(form: dict, request: gr.Request) -> Iterator[tuple]:
        values = {name: form[f[name]] for name in FORM_FIELDS} | {"styles": form[styles]}
        units = lambda: units_from_form(ctx, control, form)  # noqa: E731
        yield from submit_and_follow(ctx, values, form[painter], user_of(request), units, shown=form[images])

    def generate_grid(form: dict, request: gr.Request) -> Iterator[tuple]:
        values = {name: form[f[name]] for name in FORM_FIELDS} | {"styles": form[styles]}
        units = lambda: units_from_form(ctx, control, form)  # noqa: E731
        axes = lambda: grid_request_from_form(grid, form)  # noqa: E731
        yield from submit_grid_and_follow(
            ctx, values, form[painter], axes, user_of(request), units, shown=form[images]
        )

    def reconnect(request: gr.Request) -> Iterator[tuple]:
        yield from follow_running(ctx, request)

    def generate_series(form: dict, request: gr.Request) -> Iterator[tuple]:
        values = {name: form[f[name]] for name in FORM_FIELDS} | {"styles": form[styles]}
        units = lambda: units_from_form(ctx, control, form)  # noqa: E731
        yield from submit_series_and_follow(
            ctx, values, form[story_prompts], form[story_seeds], user_of(request), units, shown=form[images]
        )

    run.click(generate, inputs, outputs, concurrency_limit=None)
    story_run.click(generate_series, inputs | {story_prompts, story_seeds}, outputs, concurrency_limit=None)
    grid.run.click(generate_grid, inputs | grid.components(), outputs, concurrency_limit=None)
    # a reload (or a second browser tab) picks up this user's generation where it is
    ctx.on_load.append({"fn": reconnect, "inputs": None, "outputs": outputs, "concurrency_limit": None})
    def selected_infotext(paths: list[str], event: gr.SelectData) -> tuple:
        return infotext_of(paths, event.index), event.index

    gallery.select(selected_infotext, images, [infotext, selected])
    def interrupt_mine(request: gr.Request) -> None:
        ctx.studio.interrupt(owner_to_check(request))

    def skip_mine(request: gr.Request) -> None:
        ctx.studio.skip(owner_to_check(request))

    interrupt.click(interrupt_mine, None, None)
    skip.click(skip_mine, None, None)
    random_seed.click(lambda: -1, None, f["seed"])
    reuse_seed.click(selected_seed, [images, selected], f["seed"])  # the selected image's own seed, as A1111
    clear_image.click(lambda: None, None, f["init_image"])
    size = [f["width"], f["height"]]
    send_img2img.click(_selected_image, [images, selected], [f["init_image"], img2img]).then(
        size_from_picture, [f["init_image"], *size], size
    )
    only_masked = f["inpaint_only_masked"]  # its cut-out is sampled at the model's size: no auto size then
    send_inpaint.click(_selected_image, [images, selected], [painter, inpaint]).then(
        size_from_picture, [painter, *size, only_masked], size
    )
    f["init_image"].upload(size_from_picture, [f["init_image"], *size], size)
    painter.upload(size_from_picture, [painter, *size, only_masked], size)
    add_lora.click(_add_lora, [f["prompt"], lora, lora_weight], f["prompt"])
    lora.change(lambda name: _lora_card(ctx, name), lora, [lora_card, lora_preview, lora_weight])
    add_embedding.click(lambda prompt, name: _append(prompt, name) if name else prompt, [f["prompt"], embedding], f["prompt"])  # noqa: E501
    library_pickers = [f["model"], f["vae"], lora, embedding, styles]  # the outputs of _refreshed
    refresh.click(lambda: _refreshed(ctx), None, library_pickers)
    prompts = [f["prompt"], f["negative_prompt"]]
    apply_styles.click(lambda *args: _styles_applied(ctx, *args), [*prompts, styles], [*prompts, styles, progress])
    f["model"].change(
        lambda model, cfg, sampler: _family_defaults(ctx, model, cfg, sampler),
        [f["model"], f["cfg_scale"], f["sampler"]],
        [f["cfg_scale"], f["sampler"]],
    )
    # files copied into controlnet/ or models/upscalers after the server started: on refresh and reload
    pickers = [f["hires_upscaler"], *control.pickers()]
    refresh.click(lambda: _file_choices(ctx, len(control.units)), None, pickers)
    ctx.on_load.append({"fn": lambda: _file_choices(ctx, len(control.units)), "inputs": None, "outputs": pickers})
    # A page (re)load shows the saved defaults and today's library, not those of the server's start.
    defaults = ["sampler", "steps", "cfg_scale", "width", "height", "negative_prompt"]
    ctx.on_load.append(
        {
            "fn": lambda: (*_refreshed(ctx), *_saved_defaults(ctx, defaults)),
            "inputs": None,
            "outputs": [*library_pickers, *[f[name] for name in defaults]],
        }
    )


def _family_defaults(ctx: UiContext, model: str | None, cfg: float, sampler: str) -> tuple:
    """Kolors' CFG 5 and Euler when a Kolors model is picked (the preferences back for SD models)."""
    from lorastudio.service.choices import family_form_defaults

    preferred = {"cfg_scale": ctx.preferences.cfg_scale, "sampler": ctx.preferences.sampler}
    update = family_form_defaults(ctx.studio.workspace, model, {"cfg_scale": cfg, "sampler": sampler}, preferred)
    return tuple(gr.update(value=update[n]) if n in update else gr.update() for n in ("cfg_scale", "sampler"))


def _saved_defaults(ctx: UiContext, names: list[str]) -> list:
    from lorastudio.errors import LorastudioError
    from lorastudio.service.preferences import load_preferences

    try:
        saved = load_preferences(ctx.studio.workspace)
    except LorastudioError:
        return [gr.update() for _ in names]
    # Only what changed since the page was built: a value typed while the page loads stays.
    return [
        gr.update(value=getattr(saved, name))
        if getattr(saved, name) != getattr(ctx.preferences, name)
        else gr.update()
        for name in names
    ]


SAME_SAMPLER, SAME_SCHEDULER = "Use same sampler", "Use same scheduler"  # A1111's words (GenerateConfig: None)


def hires_sampler_choices(t: Translator) -> list[tuple[str, str]]:
    """"Use same sampler" in the page's language, then every sampler."""
    from lorastudio.service.choices import sampler_names

    return [(t("generate.hires_same_sampler"), SAME_SAMPLER), *((name, name) for name in sampler_names())]


def hires_schedule_choices(t: Translator) -> list[tuple[str, str]]:
    """"Use same scheduler", then the schedule types as the first pass's picker shows them."""
    return [(t("generate.hires_same_schedule"), SAME_SCHEDULER), *schedule_choices(t)]


def schedule_choices(t: Translator) -> list[tuple[str, str]]:
    """Schedule types as (shown, value): "Automatic" in the page's language, as the VAE picker's."""
    from lorastudio.service.choices import schedule_names

    return [(t("generate.schedule_automatic") if name == "Automatic" else name, name) for name in schedule_names()]


def _append(prompt: str, text: str) -> str:
    prompt = (prompt or "").rstrip()
    return f"{prompt}, {text}" if prompt else text


def _add_lora(prompt: str, name: str | None, weight: float) -> str:
    """`<lora:name:w>` at the end of the prompt, as A1111's extra-networks cards insert it."""
    if not name:
        return prompt
    return _append(prompt, f"<lora:{name}:{round(float(weight), 2):g}>")


def _lora_card(ctx: UiContext, name: str | None) -> tuple:
    """The picked LoRA's card: its latest sample, trigger words, base model and notes; the weight
    slider moves to its preferred weight (A1111's card setting) when it has one."""
    from pathlib import Path

    from lorastudio.service.loras import list_loras

    row = next((r for r in list_loras(ctx.studio.workspace) if r["name"] == name), None) if name else None
    if row is None:
        return "", gr.update(value=None, visible=False), gr.update()
    lines = [f"**{name}**"]
    for key, label in (("trigger", "library.column.trigger"), ("base_model", "library.column.base"),
                       ("step", "library.column.steps"), ("preferred_weight", "generate.lora_weight"),
                       ("notes", "library.notes"), ("error", "library.column.error")):  # fmt: skip
        if row.get(key):
            lines.append(f"- {ctx.t(label)}: `{row[key]}`")
    sample = next((str(p) for p in row.get("samples", []) if Path(str(p)).is_file()), None)
    weight = gr.update(value=row["preferred_weight"]) if row.get("preferred_weight") else gr.update()
    return "\n".join(lines), gr.update(value=sample, visible=sample is not None), weight


def _refreshed(ctx: UiContext) -> tuple:
    """Today's models, VAEs, LoRAs, embeddings and styles for the pickers."""
    from lorastudio.service.choices import embedding_names, lora_names, model_names, style_names, vae_names

    ws = ctx.studio.workspace
    return (
        gr.update(choices=model_names(ws)),
        gr.update(choices=[(ctx.t("generate.vae_automatic"), "")] + [(name, name) for name in vae_names(ws)]),
        gr.update(choices=lora_names(ws)),
        gr.update(choices=embedding_names(ws)),
        gr.update(choices=style_names(ws)),
    )


def _styles_applied(ctx: UiContext, prompt: str, negative_prompt: str, names: list[str] | None) -> tuple:
    """A1111's "apply styles" button: the picked styles written into the prompt boxes, the picker
    cleared (so they are not merged a second time when the job is queued)."""
    from lorastudio.service.styles import apply_styles

    try:
        prompt, negative_prompt = apply_styles(ctx.studio.workspace, prompt or "", negative_prompt or "", names or [])
    except Exception as exc:
        return gr.update(), gr.update(), gr.update(), error_markup(ctx, exc)
    return prompt, negative_prompt, [], ""


def _file_choices(ctx: UiContext, units: int) -> tuple:
    """Today's hires upscalers, then the ControlNets and preprocessors of every unit (model, module)."""
    from lorastudio.service.choices import control_module_names, controlnet_titles, hires_upscaler_names

    ws = ctx.studio.workspace
    models, modules = controlnet_titles(ws), control_module_names()
    return (
        gr.update(choices=hires_upscaler_names(ws)),
        *(gr.update(choices=choices) for _ in range(units) for choices in (models, modules)),
    )


def _selected_image(images: list[str], index: int) -> tuple:
    return selected_image(images, index), gr.update(open=True)


