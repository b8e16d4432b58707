"""`lorastudio serve --root-path /studio` behind a reverse proxy that strips the prefix (nginx's
`location /studio/ { proxy_pass http://127.0.0.1:7860/; }` with X-Forwarded-Host): the login
page, the UI and its images all stay under the proxy's address."""

from __future__ import annotations

import pytest

from browser import PASSWORD, USER, chromium, require_browser, served_studio, stripping_proxy

pytestmark = pytest.mark.slow


def test_the_ui_works_under_a_path_prefix_behind_a_proxy(tmp_path, tiny_models_dir):
    require_browser()
    with (
        served_studio(tmp_path / "studio", tiny_models_dir, root_path="/studio") as served,
        stripping_proxy(served.url, "/studio") as base,
        chromium(base.removesuffix("/studio")) as browser,
    ):
        page = browser.page()
        page.goto(base + "/")
        assert page.url.startswith(base + "/login")
        page.fill("#user", USER)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/ui/en/")
        page.wait_for_selector("#generate-run")
        page.locator("#field-prompt textarea").fill("through the proxy")
        for box in ("#field-width input", "#field-height input"):
            page.locator(box).first.fill("64")
            page.locator(box).first.press("Tab")
        page.click("#generate-run")
        page.wait_for_function(
            "() => document.querySelector('#infotext textarea').value.includes('through the proxy')",
            timeout=120_000,
        )
        image = page.locator("#gallery img").first
        assert image.get_attribute("src").startswith(base + "/ui/en/")
        assert browser.foreign == [], browser.foreign  # nothing asked of the server's own address
