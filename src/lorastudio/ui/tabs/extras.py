"""Extras: upscale one picture (A1111's Extras tab), e.g. one the Generate tab sent here.

The work is `service.extras` (the same function as `/sdapi/v1/extra-single-image`); the result
is stored in outputs/ with the source's recipe plus the postprocess keys.
"""

from __future__ import annotations

import gradio as gr

from lorastudio.ui.context import UiContext, error_markup
from lorastudio.ui.generate_run import selected_image

TAB_ID = "extras"
LABEL = "tab.extras"


def build(ctx: UiContext) -> None:
    from lorastudio.service.extras import extras_upscaler_names

    t = ctx.t
    names = extras_upscaler_names(ctx.studio.workspace)  # filters, then studio/models/upscalers
    with gr.Row():
        with gr.Column():
            source = gr.Image(  # image_mode None: the file as sent (Gradio's RGB drops alpha to black)
                type="filepath", image_mode=None, label=t("extras.source"), elem_id="extras-source", height=320
            )
            upscaler = gr.Dropdown(names, value="Lanczos", label=t("extras.upscaler"), elem_id="extras-upscaler")
            scale = gr.Slider(1, 8, value=2, step=0.25, label=t("extras.scale"), elem_id="extras-scale")
            with gr.Row():
                upscaler_2 = gr.Dropdown(names, value="None", label=t("extras.upscaler_2"), elem_id="extras-upscaler-2")
                visibility = gr.Slider(0, 1, value=0, step=0.05, label=t("extras.upscaler_2_visibility"))
            run = gr.Button(t("extras.run"), variant="primary", elem_id="extras-run")
        with gr.Column():
            result = gr.Image(  # shown as saved: a download keeps its recipe chunks
                type="filepath", image_mode=None, label=t("extras.result"), elem_id="extras-result", height=320
            )
            info = gr.Textbox(label=t("generate.infotext"), lines=4, interactive=False, elem_id="extras-info")
            message = gr.Markdown(elem_id="extras-message")
    ctx.shared["extras.source"] = source

    def sent_from_generate(images: list[str], index: int) -> tuple:
        return selected_image(images, index), gr.Tabs(selected=TAB_ID)  # the gallery's selected image, as A1111

    sent = [ctx.shared["generate.images"], ctx.shared["generate.selected"]]
    ctx.shared["generate.send_extras"].click(sent_from_generate, sent, [source, ctx.tabs])

    def upscale(path: str | None, name: str, factor: float, name_2: str, visibility_2: float) -> tuple:
        from lorastudio.service.extras import read_picture, save_upscaled, upscale_image
        from lorastudio.service.png_info import png_info

        if not path:
            return None, "", t("extras.no_source")
        try:
            out = upscale_image(
                read_picture(path),  # as shown: gradio passes a phone's JPEG as stored
                ctx.studio.settings,
                scale=float(factor),
                upscaler=name,
                workspace=ctx.studio.workspace,
                upscaler_2=name_2,
                upscaler_2_visibility=float(visibility_2),
            )
            saved = save_upscaled(ctx.studio.workspace, path, out, float(factor), name)
        except Exception as exc:  # the last run's picture and text go: they are not this run's
            return None, "", error_markup(ctx, exc)
        return str(saved), png_info(saved)["info"], t("extras.done", width=out.width, height=out.height)

    run.click(upscale, [source, upscaler, scale, upscaler_2, visibility], [result, info, message])
