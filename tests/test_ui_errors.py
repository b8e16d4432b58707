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


# --- a data-set import's report ---------------------------------------------------------------

CJK = re.compile(r"[\u4e00-\u9fff]")


def _page(language: str):
    """What `import_result_markup` reads of a page's context: its labels and its language."""
    from types import SimpleNamespace

    from lorastudio.ui.i18n import translator

    return SimpleNamespace(t=translator(language), language=language)


def _folder_with_every_common_problem(tmp_path: Path) -> Path:
    import json

    from PIL import Image

    source = tmp_path / "src"
    source.mkdir()
    red = source / "red.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(red)
    (source / "red.txt").write_text("red, square", encoding="utf-8")
    (source / "red.caption").write_text("a red square", encoding="utf-8")
    (source / "redcopy.png").write_bytes(red.read_bytes())  # the same picture again
    Image.new("RGB", (32, 32), (30, 200, 30)).save(source / "角色.png")  # stored under an ASCII name
    Image.new("RGB", (32, 32), (30, 30, 200)).save(source / "kohya.png")
    (source / "meta_cap.json").write_text(json.dumps({"kohya": {"caption": "a square"}}), encoding="utf-8")
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    (source / "layers.psd").write_bytes(b"8BPS")
    (source / "README").write_bytes(b"read me")
    return source


def test_an_imports_refused_files_and_notes_are_chinese_on_the_chinese_page_and_english_elsewhere(cli, tmp_path):
    """Each common reason a file was refused or skipped, and each note, has a key and params beside its
    English reason: the Chinese page words them; the English page, the CLI and `--json` keep the English."""
    import json

    from lorastudio.ui.tabs.datasets import import_result_markup

    source = _folder_with_every_common_problem(tmp_path)
    answered = cli("dataset", "import", source, "--name", "mix", "--json")
    assert answered.exit_code == 0, answered.output
    result = json.loads(answered.stdout)
    failed = {row["source"].split("/")[-1]: row for row in result["failed_files"]}
    skipped = {row["source"].split("/")[-1]: row for row in result["skipped_files"]}
    assert failed["broken.png"]["key"] == "image_unreadable"
    assert failed["broken.png"]["reason"].startswith("not an image Pillow can read")  # the English, as before
    assert (skipped["layers.psd"]["key"], skipped["layers.psd"]["params"]) == ("not_image_file", {"ext": ".psd"})
    assert skipped["layers.psd"]["reason"] == "not an image file (.psd); skipped"
    assert skipped["README"]["key"] == "no_extension"
    assert skipped["redcopy.png"]["key"] == "duplicate"
    assert skipped["redcopy.png"]["reason"] == f"already imported as {skipped['redcopy.png']['params']['file']}"
    assert [key["key"] for key in result["note_keys"]] == ["both_captions", "kohya_json_used", "renamed_files"]
    assert len(result["notes"]) == 3 and result["notes"][2].startswith("1 image with non-ASCII names stored")
    assert result["note_keys"][2]["params"]["original"] == "角色.png"

    zh = import_result_markup(_page("zh"), result)
    for chinese in (
        "broken.png: 无法读取的图片（文件损坏、不完整或格式不受支持）",
        "layers.psd: 不是图片文件（.psd），已跳过",
        "README: 不是图片文件（没有扩展名），已跳过",
        "redcopy.png: 重复的图片：已作为 red-",
        "1 张图片同时有 .txt 和 .caption 标注文件：读取了 .txt，未读取 .caption",
        "1 张图片的标注取自 meta\\_cap.json",
        "1 张图片的文件名含中文等非 ASCII 字符，已改用 ASCII 文件名保存（角色.png → ",
    ):
        assert chinese in zh, (chinese, zh)
    for english in ("damaged", "not an image file", "already imported", "had both", "captioned from", "non-ASCII names"):
        assert english not in zh, english

    en = import_result_markup(_page("en"), result)
    assert "layers.psd: not an image file (.psd); skipped" in en and "README: not an image file (no extension)" in en
    assert "had both .txt and .caption captions" in en and "non-ASCII names stored under ASCII file names" in en
    assert not CJK.search(en.replace("角色", ""))  # the English page: the service's lines, no Chinese

    printed = cli("dataset", "import", source, "--name", "again")  # the CLI: the English lines it always printed
    assert printed.exit_code == 0, printed.output
    assert "skipped " + str(source / "layers.psd") + ": not an image file (.psd); skipped" in printed.output
    assert "note    1 image with non-ASCII names stored under ASCII file names (角色.png -> " in printed.output
    assert not CJK.search(printed.output.replace("角色", ""))


def test_files_an_upload_refuses_are_worded_on_the_chinese_page_and_the_rest_api_keeps_english(
    studio, tmp_path, monkeypatch
):
    """The upload's own refusals (a caption that is not UTF-8, a type not accepted, a renamed file, a
    .json that is no kohya metadata, files over the size limits) carry their key into the job's result."""
    from fastapi.testclient import TestClient
    from PIL import Image

    from lorastudio.api.app import create_app
    from lorastudio.service import uploads
    from lorastudio.service.job_kinds import submit_dataset_upload
    from lorastudio.ui.tabs.datasets import import_result_markup

    monkeypatch.setattr(uploads, "MAX_METADATA_BYTES", 2**20)
    folder = tmp_path / "picked"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "good.png")
    files = {
        "gbk.txt": "红色，方块".encode("gb18030"),
        "anim.gif": b"GIF89a",
        "fake.png": b"not a picture at all",
        "config.json": b"{}",
        "meta_lat.json": b"[1, 2]",
        "long.caption": b"a" * (uploads.MAX_CAPTION_BYTES + 1),
        "meta_big.json": b" " * (2**20 + 1),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    job = studio.wait_job(submit_dataset_upload(studio, "uploaded", sorted(folder.iterdir())).id, timeout=120)
    assert job.state == "succeeded", job.error
    rows = {row["source"]: row for row in job.result["failed_files"]}
    assert {name: rows[name]["key"] for name in files} == {
        "gbk.txt": "caption_not_utf8", "anim.gif": "upload_type", "fake.png": "upload_content",
        "config.json": "json_not_meta_name", "meta_lat.json": "not_kohya_metadata",
        "long.caption": "caption_too_large", "meta_big.json": "metadata_too_large",
    }  # fmt: skip
    assert rows["gbk.txt"]["reason"] == "upload 'gbk.txt': a caption file must be UTF-8 text."
    with TestClient(create_app(studio)) as client:
        answered = client.get(f"/api/v1/jobs/{job.id}").json()["result"]["failed_files"]
    assert {row["source"]: row["reason"] for row in answered} == {name: row["reason"] for name, row in rows.items()}
    assert not any(CJK.search(row["reason"]) for row in answered)

    zh = import_result_markup(_page("zh"), job.result)
    for chinese in (
        "gbk.txt: 标注文件必须是 UTF-8 编码的文本",
        "anim.gif: 不接受 .gif 类型的文件；可上传：.png .jpg",
        "fake.png: 文件内容不是 png 格式",
        "config.json: 只有名称含“meta”的 .json",
        "meta\\_lat.json: 不是 kohya 元数据文件",
        f"long.caption: 超过 {uploads.MAX_CAPTION_BYTES} 字节",
        "meta\\_big.json: 超过 1 MiB；请把文件夹打包成 zip 上传",
    ):
        assert chinese in zh, (chinese, zh)
    assert "upload '" not in zh and "not accepted" not in zh
    en = import_result_markup(_page("en"), job.result)
    assert "gbk.txt: upload 'gbk.txt': a caption file must be UTF-8 text." in en and not CJK.search(en)


# --- errors re-raised in other words --------------------------------------------------------

_ERROR_CLASSES = {"LorastudioError", "InvalidRequest", "NotFoundError", "LimitExceeded", "UnsafeFileError",
                  "NotYours", "ImageLoadError", "StorageFull"}  # fmt: skip


def test_every_error_re_raised_in_other_words_keeps_the_key_of_the_one_it_wraps():
    """`raise InvalidRequest(f"user_id: {exc}")` dropped the key: the Chinese page fell back to English.
    An error class called with the caught error in its words must be `.wrap(message, exc)`."""
    import ast

    dropped = []
    for path in sorted(Path(lorastudio.__file__).parent.rglob("*.py")):
        for handler in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(handler, ast.ExceptHandler) or not handler.name or handler.type is None:
                continue
            caught = {n.id for n in ast.walk(handler.type) if isinstance(n, ast.Name)}
            if not caught & (_ERROR_CLASSES | {"RequestImageError"}):  # an OSError's words carry no key
                continue
            for node in ast.walk(handler):
                call = node.exc if isinstance(node, ast.Raise) else None
                if not isinstance(call, ast.Call) or not any(
                    isinstance(n, ast.Name) and n.id == handler.name for n in ast.walk(call)
                ):
                    continue
                func = call.func
                named = func.id if isinstance(func, ast.Name) else ""
                if named in _ERROR_CLASSES or (isinstance(func, ast.Call) and getattr(func.func, "id", "") == "type"):
                    dropped.append(f"{path.name}:{node.lineno}")
    assert dropped == []


def test_an_unreadable_picture_keeps_its_key_through_control_detect_and_easyphoto(workspace, tmp_path):
    from lorastudio.errors import InvalidRequest
    from lorastudio.service.annotate import detect_file
    from lorastudio.service.easyphoto import decode_image_file

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n cut")
    with pytest.raises(LorastudioError) as detect:
        detect_file(workspace, "canny", broken)
    with pytest.raises(InvalidRequest) as easyphoto:
        decode_image_file(broken, "init_image")
    assert (detect.value.key, detect.value.params["what"]) == ("image_unreadable", str(broken))
    assert (easyphoto.value.key, easyphoto.value.params["what"]) == ("image_unreadable", "init_image")
    assert str(easyphoto.value).startswith("init_image: ")  # the English line as before
    wrapped = InvalidRequest.wrap("user_id: model 'x' not found.", NotFoundError("x", key="model_not_found"))
    assert (type(wrapped), wrapped.key, str(wrapped)) == (InvalidRequest, "model_not_found", "user_id: model 'x' not found.")


# --- a form value its config refuses ----------------------------------------------------------


def test_a_generate_form_value_out_of_range_is_worded_with_the_fields_chinese_label(tiny_workspace):
    from lorastudio.ui.context import UiContext
    from lorastudio.ui.generate_run import submit_and_follow

    studio = Studio(tiny_workspace, StudioSettings())
    cases = {
        "steps": (0, "“采样步数”不能小于 1（填写的是 0）。", "steps: Input should be greater than or equal to 1"),
        "cfg_scale": ("x", "“提示词相关性 (CFG)”必须是数字。", "cfg_scale: Input should be a valid number, unable to parse string as a number"),
        "rng": ("quantum", "“随机数生成器来源”只能是以下之一：'CPU', 'GPU', 'NV'。", "rng: Input should be 'CPU', 'GPU' or 'NV'"),
        "hires_steps": (900, "不能大于 500（填写的是 900）。", "hires_steps: Input should be less than or equal to 500"),
    }  # fmt: skip
    try:
        shown = {}
        for field, (value, _, _) in cases.items():
            values = {"prompt": "a red square", "model": "tiny-sd15", field: value}
            shown[field] = [
                _first_status(submit_and_follow(UiContext.create(studio, language), values, None, user=""))
                for language in ("zh", "en")
            ]
        assert studio.list_jobs(limit=10) == []
    finally:
        studio.close()
    for field, (_, chinese, english) in cases.items():
        zh, en = shown[field]
        assert chinese in zh and "Input should" not in zh, zh
        assert en == f'<span class="error-text">Error: {english}</span>', en  # the English page as before


def test_a_training_form_value_out_of_range_is_worded_with_the_fields_chinese_label(tiny_workspace):
    from lorastudio.service.train_runs import preset_values, train_request
    from lorastudio.ui.context import UiContext, error_markup

    studio = Studio(tiny_workspace, StudioSettings())
    try:
        zh, en = UiContext.create(studio, "zh"), UiContext.create(studio, "en")
    finally:
        studio.close()
    form = preset_values(None)
    with pytest.raises(LorastudioError) as rank:
        train_request(None, {**form, "lora.rank": 0})
    with pytest.raises(LorastudioError) as precision:
        train_request(None, {**form, "train.mixed_precision": "fp64"})
    with pytest.raises(LorastudioError) as two:
        train_request(None, {**form, "lora.rank": 0, "train.batch_size": 0})
    assert rank.value.key == "value_too_small" and rank.value.params["field"] == "lora.rank"
    assert str(rank.value).startswith("training form: lora.rank = 0: Input should be greater than or equal to 1")
    assert f"“{LABELS['trainform.lora.rank'][1]}”不能小于 1（填写的是 0）" in error_markup(zh, rank.value)
    assert f"“{LABELS['trainform.train.mixed_precision'][1]}”只能是以下之一：" in error_markup(zh, precision.value)
    assert error_markup(en, rank.value) == f'<span class="error-text">Error: {rank.value}</span>'
    assert two.value.key is None and "Input should" in error_markup(zh, two.value)  # two problems: every line, in English


def test_an_upload_with_no_usable_file_a_picture_over_pillows_limit_and_a_missing_one_are_worded_in_chinese(
    studio, tmp_path, monkeypatch
):
    from PIL import Image

    from lorastudio.data.images import open_image
    from lorastudio.generate.images import open_image_file
    from lorastudio.service.job_kinds import submit_dataset_upload
    from lorastudio.ui.context import worded_error

    zh = _page("zh")
    (tmp_path / "anim.gif").write_bytes(b"GIF89a")
    (tmp_path / "fake.png").write_bytes(b"not a picture at all")
    with pytest.raises(LorastudioError, match="none of the 2 files can be used") as none:
        submit_dataset_upload(studio, "nothing", [tmp_path / "anim.gif", tmp_path / "fake.png"])
    assert (none.value.key, none.value.params["count"], none.value.params["file"]) == ("dataset_none_usable", 2, "anim.gif")
    assert worded_error(zh, none.value.key, none.value.params, str(none.value)).startswith("数据集导入：2 个文件都不能使用")

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1024 pixels: over twice Pillow's limit, its error
    for opened in (lambda: open_image(tmp_path / "big.png"), lambda: open_image_file(str(tmp_path / "big.png"), "init")):
        with pytest.raises(LorastudioError, match="shrink it first") as bomb:
            opened()
        assert bomb.value.key == "image_bomb" and "big.png" in bomb.value.params["what"]
        assert "像素过多" in worded_error(zh, bomb.value.key, bomb.value.params, str(bomb.value))
    with pytest.raises(LorastudioError, match="file not found") as gone:
        open_image(tmp_path / "gone.png")
    assert (gone.value.key, gone.value.params) == ("image_missing", {"what": str(tmp_path / "gone.png")})
    assert worded_error(zh, "image_missing", gone.value.params, str(gone.value), "import") == "找不到这个文件"
