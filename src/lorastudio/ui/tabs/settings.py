"""Settings: the UI language and the Generate form's defaults, saved in the workspace.

Saving writes `preferences.json` (service.preferences) and reloads the page in the chosen
language; a restart keeps both. The Generate form's prompt and typed negative prompt go along
(kept in the browser tab's sessionStorage across the reload).
"""

from __future__ import annotations

import json

import gradio as gr

from lorastudio.service.preferences import LANGUAGES, Preferences
from lorastudio.ui.context import UiContext, error_markup
from lorastudio.ui.forms import field_control, optional_number

TAB_ID = "settings"
LABEL = "tab.settings"
_KEPT_PROMPTS = "lorastudio.kept-prompts"  # sessionStorage: the prompts across a language switch


def language_switch_js(page_negative: str) -> str:
    """Go to the saved language's page, keeping the Generate form's prompt, and its negative prompt
    where the user changed it from this page's default (a newly saved default shows otherwise)."""
    return (
        "(lang, prompt, negative) => { if (!lang) { return; }"
        f" const kept = {{prompt: prompt || '', negative: negative === {json.dumps(page_negative)} ? null : negative}};"
        f" sessionStorage.setItem({json.dumps(_KEPT_PROMPTS)}, JSON.stringify(kept));"
        " window.location.href = '../' + lang + '/'; }"
    )


def restore_prompts_js() -> str:
    """On load: the prompts the language switch kept (once), else the form's own."""
    return (
        f"(prompt, negative) => {{ const raw = sessionStorage.getItem({json.dumps(_KEPT_PROMPTS)});"
        " if (!raw) { return [prompt, negative]; }"
        f" sessionStorage.removeItem({json.dumps(_KEPT_PROMPTS)}); const kept = JSON.parse(raw);"
        " return [kept.prompt || prompt, kept.negative ?? negative]; }"
    )


def build(ctx: UiContext) -> None:
    from lorastudio.service.choices import sampler_names

    t, prefs = ctx.t, ctx.preferences
    language = gr.Radio(
        [(name, code) for code, name in LANGUAGES.items()],
        value=prefs.language,
        label=t("settings.language"),
        elem_id="settings-language",
    )
    with gr.Accordion(t("settings.defaults"), open=True):
        sampler = gr.Dropdown(sampler_names(), value=prefs.sampler, label=t("generate.sampler"))
        steps = field_control(Preferences, "steps", t("generate.steps"), value=prefs.steps, slider=True)
        cfg = field_control(Preferences, "cfg_scale", t("generate.cfg_scale"), value=prefs.cfg_scale, slider=True)
        with gr.Row():
            width = field_control(Preferences, "width", t("generate.width"), value=prefs.width, step=8)
            height = field_control(Preferences, "height", t("generate.height"), value=prefs.height, step=8)
        negative = field_control(
            Preferences, "negative_prompt", t("generate.negative_prompt"), value=prefs.negative_prompt, lines=2
        )
    save = gr.Button(t("settings.save"), variant="primary", elem_id="settings-save")
    message = gr.Markdown(elem_id="settings-message")
    reload_to = gr.Textbox(visible=False, elem_id="settings-reload-to")

    def save_settings(language, sampler, steps, cfg, width, height, negative) -> tuple:
        from lorastudio.service.preferences import save_preferences

        try:
            saved = save_preferences(
                ctx.studio.workspace, language=language, sampler=sampler, steps=int(steps), cfg_scale=float(cfg),
                width=optional_number(width), height=optional_number(height), negative_prompt=negative or "",
            )  # fmt: skip
        except Exception as exc:
            return error_markup(ctx, exc), ""
        return t("settings.saved"), saved.language

    # The page of the other language is another Gradio app: go there once the file is saved, the
    # Generate form's prompts with it (that page restores them on load).
    prompts = [ctx.shared["generate.fields"][name] for name in ("prompt", "negative_prompt")]
    save.click(save_settings, [language, sampler, steps, cfg, width, height, negative], [message, reload_to]).then(
        None, [reload_to, *prompts], None, js=language_switch_js(prefs.negative_prompt)
    )
    ctx.on_load.append({"fn": None, "inputs": prompts, "outputs": prompts, "js": restore_prompts_js()})

