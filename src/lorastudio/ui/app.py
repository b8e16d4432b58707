"""The web UI: Gradio pages mounted in the API's FastAPI app, one per UI language.

The UI runs in the server's process and calls the same service layer as the API and CLI;
it has no logic of its own. It sits behind the same security middleware (one login for UI,
API and docs). Each language is its own page (`/ui/en/`, `/ui/zh/`) built from one label
table, and `/` sends a browser to the language saved in Settings, so switching language is
a saved preference plus a reload, not a per-component relabelling.

Nothing is fetched from the internet: analytics off, the theme uses the system's fonts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import RedirectResponse

from lorastudio.service.preferences import LANGUAGES, load_preferences
from lorastudio.ui.context import UiContext
from lorastudio.ui.field_help import page_language
from lorastudio.ui.tabs import TABS

if TYPE_CHECKING:
    import gradio as gr
    from fastapi import FastAPI
    from starlette.types import ASGIApp

    from lorastudio.service.studio import Studio

__all__ = ["build_blocks", "mount_ui", "UI_PATH"]

UI_PATH = "/ui"

_CSS = """
#progress-text { min-height: 2.2em; }
.error-text { color: var(--error-text-color, #b91c1c); }
footer { display: none !important; }
"""


# Gradio translates its own texts ("Drop Image Here", "Clear") after the browser's language; each
# page tells Gradio its language before Gradio's scripts start, whatever the browser says.
GRADIO_LOCALES = {"en": "en", "zh": "zh-CN"}
_LOCALE_SCRIPT = (
    '<script>Object.defineProperty(navigator, "language", {{get: () => "{locale}"}});'
    'Object.defineProperty(navigator, "languages", {{get: () => ["{locale}"]}});</script>'
)


class PageLocale:
    """ASGI middleware: the first <head> of each language's page gets that language's locale script."""

    def __init__(self, app: ASGIApp, root: str = UI_PATH) -> None:
        self.app = app
        self.pages = {f"{root}/{language}/": locale for language, locale in GRADIO_LOCALES.items()}

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        locale = self.pages.get(path) if scope["type"] == "http" and scope.get("method") == "GET" else None
        if locale is None:
            await self.app(scope, receive, send)
            return
        start: dict = {}
        body = bytearray()

        async def buffered(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body"):
                return
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            content = bytes(body)
            is_html = any(k.lower() == b"content-type" and b"text/html" in v for k, v in headers)
            encoded = any(k.lower() == b"content-encoding" for k, _ in headers)
            if is_html and not encoded:
                script = _LOCALE_SCRIPT.format(locale=locale).encode()
                content = content.replace(b"<head>", b"<head>" + script, 1)
            headers.append((b"content-length", str(len(content)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": content})

        await self.app(scope, receive, buffered)


def _offline_gradio(studio: Studio) -> None:
    """Gradio settings for a machine without internet: no analytics, uploads in the workspace."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("GRADIO_TEMP_DIR", str(studio.workspace.cache / "gradio"))
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _theme():
    """Gradio's default look with system fonts: the default theme would load Google Fonts."""
    import gradio as gr

    fonts = ["system-ui", "-apple-system", "Segoe UI", "Noto Sans CJK SC", "WenQuanYi Micro Hei", "sans-serif"]
    mono = ["ui-monospace", "Menlo", "Consolas", "monospace"]
    return gr.themes.Default(font=fonts, font_mono=mono)


def build_blocks(studio: Studio, language: str) -> gr.Blocks:
    """The whole UI in one language: a header and one tab per module in `ui.tabs.TABS`."""
    import gradio as gr

    ctx = UiContext.create(studio, language)
    t = ctx.t
    # page_language: the controls' help lines (config field descriptions) in the page's language
    with page_language(language), gr.Blocks(title=t("app.title"), analytics_enabled=False) as blocks:
        gr.Markdown(f"## {t('app.title')}\n{t('app.subtitle')}", elem_id="app-header")
        with gr.Tabs() as tabs:
            ctx.tabs = tabs
            for tab in TABS:
                with gr.Tab(t(tab.LABEL), id=tab.TAB_ID, elem_id=f"tab-{tab.TAB_ID}"):
                    tab.build(ctx)
        for hook in ctx.on_load:
            blocks.load(**hook)
    return blocks


def mount_ui(app: FastAPI, studio: Studio, root_path: str = "") -> None:
    """Mount one page per language under `/ui/<lang>/` and send `/` and `/ui` to the saved one.

    `root_path` is the reverse proxy's prefix: Gradio builds the links of its files (generated
    images) from it and the proxy's X-Forwarded-Host, so they stay under the proxy's address.
    """
    _offline_gradio(studio)
    import gradio as gr

    theme = _theme()
    for language in LANGUAGES:
        gr.mount_gradio_app(
            app,
            build_blocks(studio, language),
            path=f"{UI_PATH}/{language}",
            root_path=f"{root_path.rstrip('/')}{UI_PATH}/{language}",
            theme=theme,
            css=_CSS,
            footer_links=[],
            show_error=True,
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            enable_monitoring=False,
            # images the UI shows come from these folders (data sets: the caption editor's images
            # and the report); the rest of the workspace (the job database, the session key,
            # uploads of other users) is never served as a file
            # and the portrait tab's template library and people's reference photos
            allowed_paths=[str(studio.workspace.outputs), str(studio.workspace.runs), str(studio.workspace.datasets),
                           str(studio.workspace.root / "templates"), str(studio.workspace.root / "portraits")],
            blocked_paths=[str(studio.workspace.cache / "session.key"), str(studio.workspace.root / "studio.db")],
        )

    def to_saved_language(request: Request) -> RedirectResponse:
        language = load_preferences(studio.workspace).language
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}{UI_PATH}/{language}/", status_code=307)

    app.add_middleware(PageLocale)
    app.add_api_route("/", to_saved_language, methods=["GET"], include_in_schema=False)
    app.add_api_route(UI_PATH, to_saved_language, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{UI_PATH}/", to_saved_language, methods=["GET"], include_in_schema=False)
