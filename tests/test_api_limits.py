"""Bounded work per request (422 naming the limit and its `serve` option), uploads after the
quota check and spooled in the workspace, and a full disk answered 503 with nothing half-written."""

from __future__ import annotations

import base64
import errno
import io
import sqlite3

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lorastudio.api.app import create_app
from lorastudio.service.studio import Studio, StudioSettings

TINY = {"steps": 1, "width": 64, "height": 64}


def png_bytes(size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def idle_studio(workspace):
    """No worker (jobs stay queued), small limits so each is easy to cross."""
    settings = StudioSettings(
        max_prompt_chars=100,
        max_image_pixels=256 * 256,
        max_output_pixels=512 * 512,
        max_images_per_request=4,
        max_steps=10,
        max_upload_bytes=4096,
        max_queued_per_user=2,
    )
    studio = Studio(workspace, settings)
    yield studio
    studio.close()


@pytest.fixture
def client(idle_studio):
    with TestClient(create_app(idle_studio), raise_server_exceptions=False) as client:
        yield client


def assert_limit(response, *words: str) -> None:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, (word, detail)


@pytest.mark.parametrize(
    ("native", "a1111", "words"),
    [
        ({"prompt": "x" * 101}, {"prompt": "x" * 101}, ("prompt", "--max-prompt-chars")),
        ({"negative_prompt": "x" * 101}, {"negative_prompt": "x" * 101}, ("--max-prompt-chars",)),
        ({"steps": 11}, {"steps": 11}, ("steps", "--max-steps")),
        (
            {"hires_scale": 2, "hires_steps": 11},
            {"enable_hr": True, "hr_second_pass_steps": 11},
            ("--max-steps",),
        ),
        ({"width": 512, "height": 256}, {"width": 512, "height": 256}, ("512x256", "--max-pixels")),
        ({"batch_size": 5}, {"batch_size": 5}, ("images", "--max-images")),
        ({"batch_size": 2, "count": 3}, {"batch_size": 2, "n_iter": 3}, ("--max-images",)),
        (
            {"width": 256, "height": 256, "hires_scale": 2.5},
            {"width": 256, "height": 256, "enable_hr": True, "hr_scale": 2.5},
            ("hires output", "--max-output-pixels"),
        ),
    ],
)
def test_limits_answer_422_naming_the_option(client, idle_studio, native, a1111, words):
    assert_limit(client.post("/api/v1/jobs/generate", json={**TINY, **native}), *words)
    assert_limit(client.post("/sdapi/v1/txt2img", json={**TINY, **a1111}), *words)
    assert idle_studio.list_jobs() == []


def test_requests_at_the_limits_are_queued(client, idle_studio):
    at_limit = {"prompt": "x" * 100, "steps": 10, "width": 256, "height": 256, "batch_size": 2, "count": 2}
    assert client.post("/api/v1/jobs/generate", json=at_limit).status_code == 200
    hires = {**TINY, "width": 256, "height": 256, "hires_scale": 2.0, "hires_steps": 10}
    assert client.post("/api/v1/jobs/generate", json=hires).status_code == 200
    assert len(idle_studio.list_jobs()) == 2


def test_a_request_with_no_size_is_bounded_by_its_init_pictures_size(client, idle_studio):
    """No size given: the request samples at the init picture's own size, so that size meets --max-pixels."""
    big = base64.b64encode(png_bytes((300, 300))).decode()
    assert_limit(client.post("/api/v1/jobs/generate", json={"steps": 1, "init_image": big}), "296x296", "--max-pixels")
    # "Only masked" inpainting samples the cut-out region at the model's size, not the picture's.
    only_masked = {"steps": 1, "init_image": big, "mask": big, "inpaint_only_masked": True}
    assert_limit(client.post("/api/v1/jobs/generate", json=only_masked), "1024x1024", "--max-pixels")
    small = base64.b64encode(png_bytes((200, 120))).decode()
    assert client.post("/api/v1/jobs/generate", json={"steps": 1, "init_image": small}).status_code == 200
    # img2img has no hires pass: a hires factor left in the request is not an output size.
    leftover = {"steps": 1, "init_image": small, "hires_scale": 4.0}
    assert client.post("/api/v1/jobs/generate", json=leftover).status_code == 200
    assert len(idle_studio.list_jobs()) == 2


def test_upscale_output_is_bounded(client):
    image = base64.b64encode(png_bytes((300, 300))).decode()
    lanczos = {"image": image, "upscaler_1": "Lanczos"}
    response = client.post("/sdapi/v1/extra-single-image", json={**lanczos, "upscaling_resize": 2})
    assert_limit(response, "600x600", "--max-output-pixels")
    ok = client.post("/sdapi/v1/extra-single-image", json={**lanczos, "upscaling_resize": 1.5})
    assert ok.status_code == 200


def test_upload_size_is_bounded_per_file(client, idle_studio):
    response = client.post("/api/v1/uploads", files={"file": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 5000)})
    assert response.status_code == 413
    assert list(idle_studio.uploads_dir.iterdir()) == []


def test_cli_limits_are_serve_options():
    import typer

    from lorastudio.cli import _register, app

    _register()
    serve = typer.main.get_command(app).commands["serve"]
    help_text = " ".join(opt for param in serve.params for opt in param.opts)
    for option in (
        "--max-prompt-chars",
        "--max-pixels",
        "--max-output-pixels",
        "--max-images",
        "--max-steps",
        "--max-upload-mb",
        "--max-weights-upload-mb",
        "--max-options-kb",
        "--tokens-file",
    ):
        assert option in help_text, option


# --- uploads and the quota ------------------------------------------------------------------


def test_uploads_wait_for_the_quota_and_refused_requests_leave_no_files(client, idle_studio):
    image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    for _ in range(2):
        assert client.post("/api/v1/jobs/generate", json={**TINY, "init_image": image}).status_code == 200
    kept = set(idle_studio.uploads_dir.iterdir())
    assert len(kept) == 2
    # at the quota: inline images, img2img, uploads and data sets answer 429 and store nothing
    assert client.post("/api/v1/jobs/generate", json={**TINY, "init_image": image}).status_code == 429
    img2img = {**TINY, "init_images": [image], "mask": image}
    assert client.post("/sdapi/v1/img2img", json=img2img).status_code == 429
    assert client.post("/api/v1/uploads", files={"file": ("a.png", png_bytes())}).status_code == 429
    response = client.post("/api/v1/datasets", data={"name": "d"}, files={"file": ("a.png", png_bytes())})
    assert response.status_code == 429
    assert set(idle_studio.uploads_dir.iterdir()) == kept


def test_a_request_refused_after_its_images_were_stored_removes_them(client, idle_studio):
    image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    response = client.post("/api/v1/jobs/generate", json={**TINY, "steps": 11, "init_image": image})
    assert response.status_code == 422
    response = client.post("/sdapi/v1/img2img", json={**TINY, "steps": 11, "init_images": [image]})
    assert response.status_code == 422
    assert list(idle_studio.uploads_dir.iterdir()) == []


def test_multipart_bodies_are_spooled_inside_the_workspace(client, idle_studio, monkeypatch):
    import tempfile

    from starlette import formparsers

    folders = []
    real = tempfile.SpooledTemporaryFile

    def recording(*args, **kwargs):
        folders.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", recording)
    assert formparsers.SpooledTemporaryFile is not real  # ours, which sets dir
    response = client.post("/api/v1/uploads", files={"file": ("a.png", png_bytes())})
    assert response.status_code == 200, response.text
    spool = idle_studio.workspace.cache / "spool"
    assert folders == [str(spool)]


# --- a full disk ----------------------------------------------------------------------------


def test_full_database_answers_503_with_retry_after(client, idle_studio, monkeypatch):
    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(idle_studio.store, "enqueue", full)
    response = client.post("/api/v1/jobs/generate", json=TINY)
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert "full" in response.json()["detail"]
    image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    response = client.post("/api/v1/jobs/generate", json={**TINY, "init_image": image})
    assert response.status_code == 503
    assert list(idle_studio.uploads_dir.iterdir()) == []  # the stored image went with the refusal


def test_full_disk_during_an_upload_answers_503_and_leaves_no_part_file(client, idle_studio, monkeypatch):
    import shutil

    def copy_then_fail(source, target, length=0):
        target.write(source.read(10))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", copy_then_fail)
    response = client.post("/api/v1/uploads", files={"file": ("a.png", png_bytes())})
    assert response.status_code == 503, response.text
    assert "Retry-After" in response.headers
    assert list(idle_studio.uploads_dir.iterdir()) == []


def test_full_disk_while_storing_an_inline_image_answers_503(client, idle_studio, monkeypatch):
    from pathlib import Path

    real = Path.write_bytes

    def fail(self, data):
        real(self, data[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", fail)
    image = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    response = client.post("/api/v1/jobs/generate", json={**TINY, "init_image": image})
    assert response.status_code == 503, response.text
    assert list(idle_studio.uploads_dir.iterdir()) == []
    assert idle_studio.list_jobs() == []


def test_a_full_disk_anywhere_else_answers_503_not_500(client, idle_studio, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    job = idle_studio.submit("sleep", {"config": {"seconds": 1}})  # the anonymous caller's own job
    monkeypatch.setattr(idle_studio.store, "cancel", full)
    response = client.delete(f"/api/v1/jobs/{job.id}")
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1


# --- a damaged studio.db while the server runs ----------------------------------------------


def damaged_database_error(tmp_path) -> sqlite3.DatabaseError:
    """The error SQLite itself raises for a file that is not (any more) a database."""
    path = tmp_path / "damaged.db"
    path.write_bytes(b"not a database page " * 256)
    conn = sqlite3.connect(path)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError("SQLite read a damaged file without complaint")


@pytest.mark.parametrize(
    "error",
    [lambda tmp: sqlite3.DatabaseError("database disk image is malformed"), damaged_database_error],
    ids=["malformed-page", "not-a-database"],
)
def test_a_damaged_database_page_answers_503_naming_db_check_and_restore(
    client, idle_studio, monkeypatch, tmp_path, error
):
    exc = error(tmp_path)

    def damaged(*args, **kwargs):
        raise exc

    monkeypatch.setattr(idle_studio.store, "list_jobs", damaged)
    monkeypatch.setattr(idle_studio._status_store, "list_jobs", damaged)
    for path in ("/api/v1/jobs", "/sdapi/v1/progress"):
        response = client.get(path)
        assert response.status_code == 503, response.text
        detail = response.json()["detail"]
        assert "lorastudio db check" in detail and "lorastudio db restore BACKUP" in detail
        assert "\n" not in detail and str(idle_studio.workspace.root) not in detail


def test_a_locked_or_full_database_is_not_called_damaged():
    from lorastudio.service.quota import is_database_damaged

    assert is_database_damaged(sqlite3.DatabaseError("database disk image is malformed"))
    assert not is_database_damaged(sqlite3.OperationalError("database is locked"))
    assert not is_database_damaged(sqlite3.OperationalError("database or disk is full"))
    assert not is_database_damaged(ValueError("malformed"))
