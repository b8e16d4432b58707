"""The service's errors in the page's language: a keyed `LorastudioError` is worded by `err.<key>` on
the Chinese page, a failed job by the key its result keeps; the English page, the CLI and the REST API
keep the service's own English line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import lorastudio
from lorastudio.errors import LorastudioError, NotFoundError
from lorastudio.service.names import NOT_FOUND_KEYS
from lorastudio.service.studio import Studio, StudioSettings
from lorastudio.ui.i18n import LABELS


def test_every_error_key_raised_in_src_has_a_label_in_both_languages():
    """A key without a label would fall back to English: the sentence a Chinese user needed most."""
    source = "\n".join(p.read_text(encoding="utf-8") for p in Path(lorastudio.__file__).parent.rglob("*.py"))
    keys = set(re.findall(r'\bkey="([a-z_]+)"', source)) | set(NOT_FOUND_KEYS.values()) | {"name_not_found"}
    assert len(keys) >= 25  # the patterns still find the keys
    assert sorted(key for key in keys if f"err.{key}" not in LABELS) == []
    assert "err.job_cancelled" in LABELS  # the UI words a cancelled job by it


def test_an_error_keeps_its_english_line_and_carries_its_key_and_json_params(tmp_path):
    exc = NotFoundError("model 'x' not found; import it.", key="model_not_found", params={"name": "x", "at": tmp_path})
    assert str(exc) == "model 'x' not found; import it." and exc.key == "model_not_found"
    assert exc.params == {"name": "x", "at": str(tmp_path)}  # a path kept as its text: a job's result is JSON
    plain = LorastudioError("no key here.")
    assert (plain.key, plain.params, str(plain)) == (None, {}, "no key here.")


def _first_status(handler) -> str:
    return next(iter(handler))[0]


def test_the_chinese_page_words_a_missing_model_and_the_english_page_keeps_the_services_line(tiny_workspace):
    from lorastudio.service.names import find_model
    from lorastudio.ui.context import UiContext
    from lorastudio.ui.generate_run import submit_and_follow

    with pytest.raises(NotFoundError) as raised:
        find_model(tiny_workspace, "no-such-model")
    english = str(raised.value)
    studio = Studio(tiny_workspace, StudioSettings())  # not started: a refused form never queues
    try:
        values = {"prompt": "a red square", "model": "no-such-model"}
        zh = _first_status(submit_and_follow(UiContext.create(studio, "zh"), values, None, user=""))
        en = _first_status(submit_and_follow(UiContext.create(studio, "en"), values, None, user=""))
        assert studio.list_jobs(limit=10) == []
    finally:
        studio.close()
    assert "找不到模型“no-such-model”" in zh and "not found" not in zh, zh
    assert en == f'<span class="error-text">Error: {english}</span>'


def test_a_failed_jobs_error_is_worded_later_in_the_pages_language_and_rest_and_cli_keep_english(
    tiny_workspace, monkeypatch
):
    """A training job whose model went missing after it was queued: the Train tab and the Jobs tab
    word its stored key in Chinese; the REST API answers the English line it always did."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from lorastudio.api.app import create_app
    from lorastudio.cli import _register, app
    from lorastudio.ui.context import UiContext
    from lorastudio.ui.tabs import jobs as jobs_tab
    from lorastudio.ui.tabs import train as train_tab
    from training_helpers import tiny_train_config, write_images

    data = write_images(tiny_workspace.datasets / "reds", [((230, 20, 25), "zqx")])
    cfg = tiny_train_config(data, "zqx", "model=gone-model", "train.steps=1", "output.name=gonejob")
    studio = Studio(tiny_workspace, StudioSettings(max_queued_per_user=0))
    try:
        job = studio.store.enqueue("train", {"config": cfg.model_dump(mode="json"), "run": "gonejob"})
        studio.start()
        done = studio.wait_job(job.id, timeout=120)
        assert done.state == "failed" and done.error_key == "model_not_found", (done.error, done.result)
        assert done.error_params["name"] == "gone-model"
        english = done.error
        zh_ctx, en_ctx = UiContext.create(studio, "zh"), UiContext.create(studio, "en")
        zh = list(train_tab._follow(zh_ctx, job.id))[-1][0]
        en = list(train_tab._follow(en_ctx, job.id))[-1][0]
        zh_row = next(row for row in jobs_tab._rows(zh_ctx) if row[0] == job.id)
        with TestClient(create_app(studio)) as client:
            answered = client.get(f"/api/v1/jobs/{job.id}").json()
            missing = client.get("/api/v1/jobs/no-such-job")
    finally:
        studio.close()
    assert "找不到模型“gone-model”" in zh and "not found" not in zh, zh
    assert english in en and "gone-model" in english and "not found" in english
    assert zh_row[-1].startswith("找不到模型“gone-model”")
    assert answered["error"] == english  # REST: the English line, unchanged
    assert answered["result"]["error_key"] == "model_not_found"
    assert missing.status_code == 404
    assert "job no-such-job: not found; list jobs with `lorastudio jobs list`." in missing.text

    monkeypatch.delenv("LORASTUDIO_QUEUE_URL", raising=False)
    monkeypatch.setenv("LORASTUDIO_HOME", str(tiny_workspace.root))
    _register()
    shown = CliRunner().invoke(app, ["jobs", "show", "no-such-job"])
    assert shown.exit_code != 0
    assert "job no-such-job: not found; list jobs with `lorastudio jobs list`." in shown.output


def test_a_cancelled_job_reads_as_cancelled_in_chinese_and_an_unkeyed_error_stays_english(tiny_workspace):
    from types import SimpleNamespace

    from lorastudio.ui.context import UiContext, failed_markup, job_error_text, worded_error

    studio = Studio(tiny_workspace, StudioSettings())
    try:
        zh = UiContext.create(studio, "zh")
    finally:
        studio.close()
    cancelled = SimpleNamespace(state="cancelled", error="cancelled by request", result=None)
    assert job_error_text(zh, cancelled) == "已按请求取消"
    unkeyed = SimpleNamespace(state="failed", error="inkwash.safetensors: made for SD 1.x.", result=None)
    assert "inkwash.safetensors: made for SD 1.x." in failed_markup(zh, unkeyed)
    # a key with no label, or a label whose values are missing: the English line, never a KeyError
    assert worded_error(zh, "no_such_key", {}, "English line.") == "English line."
    assert worded_error(zh, "model_not_found", {}, "English line.") == "English line."
    assert worded_error(zh, "name_taken", {"what": "data set name", "name": "猫"}, "x") == "数据集名称“猫”已存在：请换一个名称。"
