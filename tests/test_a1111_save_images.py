"""A1111's `save_images` on /sdapi/v1/txt2img and the x/y/z plot (service/unsaved.py).

A1111's API answers the images (and a grid) as base64 and writes nothing to its outputs folder unless
`save_images: true`; bots call it thousands of times. The default keeps nothing here either: no file
in studio/outputs, no row in the library's outputs; the job record stays and says `kept: false`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from lorastudio.service.library import Library
from lorastudio.service.outputs import list_outputs
from lorastudio.service.unsaved import (
    NOT_KEPT_LINE,
    REQUEST_UPLOADS,
    hold_request_uploads,
    release_job_files,
    sweep_unsaved,
    unsaved_root,
)
from lorastudio.service.uploads import save_upload, upload_path, uploads_dir

TINY = {"steps": 4, "width": 64, "height": 64}
XYZ = ["CFG Scale", "2, 6", [], "Nothing", "", [], "Nothing", "", [], True, False, False, False, 0, False]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # `studio`, `client`: tests/conftest.py


def _decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def _files(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) if root.is_dir() else []


def _shown_by_the_web_ui(studio, job_id: str) -> tuple[str, list]:
    """What the Generate tab shows of a finished job it follows (after a reload): status, gallery."""
    from lorastudio.ui.context import UiContext
    from lorastudio.ui.generate_run import _follow

    last = list(_follow(UiContext.create(studio, "en"), job_id))[-1]
    return str(last[0]), last[2]


def _kept(ws) -> tuple[list[str], list[str]]:
    """What a request leaves behind: the files under outputs/ and the library's output rows."""
    return _files(ws.outputs), sorted(row["path"] for row in Library(ws).outputs(10_000))


def test_the_default_keeps_nothing_and_answers_the_pixels_save_images_true_keeps(client, studio):
    ws = studio.workspace
    before = _kept(ws)
    body = {**TINY, "prompt": "red", "seed": 11, "batch_size": 2}
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert _kept(ws) == before and _files(unsaved_root(ws)) == []  # nothing left, not even the job folder
    job = studio.list_jobs(limit=1)[0]
    assert job.result["kept"] is False and len(job.result["images"]) == 2
    # the job record still reads: the native API, its (now empty) files, the web UI's gallery
    record = client.get(f"/api/v1/jobs/{job.id}")
    assert record.status_code == 200 and record.json()["result"]["kept"] is False
    assert client.get(f"/api/v1/jobs/{job.id}/artifacts").json()["artifacts"] == []
    assert studio.job_images(job) == []
    status, gallery = _shown_by_the_web_ui(studio, job.id)
    assert "Done" in status and gallery == []
    assert NOT_KEPT_LINE in [e.data.get("line") for e in studio.job_events(job.id) if e.type == "log"]

    saved = client.post("/sdapi/v1/txt2img", json={**body, "save_images": True})
    assert saved.status_code == 200, saved.text
    kept_job = studio.list_jobs(limit=1)[0]
    assert "kept" not in kept_job.result
    files, rows = _kept(ws)
    pngs = [f for f in files if f.endswith(".png")]
    assert pngs == [f"{kept_job.id}/{name}" for name in sorted(kept_job.result["images"])]
    assert len(rows) == len(before[1]) + 2 and len(list_outputs(ws)) == 2
    # the same answer either way: pixels, infotexts, seeds (the request echoes its own save_images)
    assert len(data["images"]) == 2
    for unkept, kept in zip(data["images"], saved.json()["images"], strict=True):
        a, b = _decode(unkept), _decode(kept)
        assert a.size == (64, 64) and a.tobytes() == b.tobytes()
        assert a.info["parameters"] == b.info["parameters"]
    info, kept_info = json.loads(data["info"]), json.loads(saved.json()["info"])
    assert info["infotexts"] == kept_info["infotexts"] and info["all_seeds"] == [11, 12]
    assert {**data["parameters"], "save_images": True} == saved.json()["parameters"]


def test_the_xyz_plot_saves_no_grid_unless_save_images(client, studio):
    ws = studio.workspace
    before = _kept(ws)
    body = {"prompt": "red", "steps": 1, "width": 64, "height": 64, "seed": 7, "script_name": "x/y/z plot"}
    answer = client.post("/sdapi/v1/txt2img", json={**body, "script_args": XYZ})
    assert answer.status_code == 200, answer.text
    grid = _decode(answer.json()["images"][0])
    assert grid.width > 64 and "X Type: CFG Scale" in grid.info["parameters"]
    assert _kept(ws) == before and not list(ws.root.rglob("grid-*.png"))  # no grid, no cells, no rows
    job = studio.list_jobs(limit=1)[0]
    assert job.result["kept"] is False and job.result["grid"]
    status, gallery = _shown_by_the_web_ui(studio, job.id)  # the grid named in the result is gone
    assert "Done" in status and gallery == []

    saved = client.post("/sdapi/v1/txt2img", json={**body, "script_args": XYZ, "save_images": True})
    assert saved.status_code == 200, saved.text
    assert _decode(saved.json()["images"][0]).tobytes() == grid.tobytes()
    assert len(list(ws.outputs.rglob("grid-*.png"))) == 1  # as A1111 saves it, with its two cells
    assert len(_kept(ws)[1]) == len(before[1]) + 2


@pytest.mark.slow
def test_progress_previews_skip_and_interrupt_on_the_not_kept_path(client, studio):
    ws = studio.workspace
    before = _kept(ws)
    result: dict = {}

    def generate():
        result["response"] = client.post("/sdapi/v1/txt2img", json={**TINY, "steps": 150, "n_iter": 16})

    thread = threading.Thread(target=generate)
    thread.start()
    deadline, preview = time.monotonic() + 90, None
    while preview is None and time.monotonic() < deadline:
        preview = client.get("/sdapi/v1/progress?skip_current_image=false").json()["current_image"]
        time.sleep(0.05)
    assert preview is not None and _decode(preview).size[0] > 0  # A1111's live preview, as when kept
    assert client.post("/sdapi/v1/skip").json() is None
    job = studio.list_jobs(limit=1)[0]
    while "skipped" not in {e.type for e in studio.job_events(job.id)} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.post("/sdapi/v1/interrupt").json() == {}
    thread.join(60)
    assert not thread.is_alive() and result["response"].status_code == 200, result["response"].text
    images = result["response"].json()["images"]
    assert 1 <= len(images) < 16 and all(_decode(b).size == (64, 64) for b in images)
    job = studio.get_job(job.id)
    assert job.state == "cancelled" and job.result["kept"] is False
    assert _kept(ws) == before and _files(unsaved_root(ws)) == []


def test_release_and_sweep_leave_kept_and_unfinished_jobs_alone(workspace):
    from lorastudio.service.jobs import open_store

    with open_store(None, workspace) as store:
        kept = store.enqueue("sleep", {"seconds": 0})
        store.cancel(kept.id)
        kept = store.get(kept.id)
        (workspace.outputs / kept.id).mkdir(parents=True)
        assert release_job_files(workspace, kept) is False and (workspace.outputs / kept.id).is_dir()

        unkept = store.enqueue("sleep", {"seconds": 0, "keep": False})
        running = store.enqueue("sleep", {"seconds": 0, "keep": False})
        root = unsaved_root(workspace)
        for name in (unkept.id, running.id, "orphan", "fresh-orphan"):
            (root / name).mkdir(parents=True)
        old = time.time() - 7200
        os.utime(root / "orphan", (old, old))
        assert release_job_files(workspace, store.get(running.id)) is False  # its answer comes later
        store.cancel(unkept.id)
        assert sweep_unsaved(workspace, store) == ["orphan"]  # the others: too recent or still queued
        assert sorted(sweep_unsaved(workspace, store, older_than_s=0)) == sorted([unkept.id, "fresh-orphan"])
        assert [p.name for p in root.iterdir()] == [running.id]
        assert release_job_files(workspace, store.get(unkept.id)) is True  # already gone: no error


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture
def cn_studio(studio, sd15):
    """The studio with a tiny ControlNet, `cn`, for the tiny model."""
    from safetensors.torch import save_file

    from controlnet_files import diffusers_to_original, make_controlnet

    controlnet = make_controlnet(sd15, 0)
    original = diffusers_to_original(controlnet.state_dict(), dict(controlnet.config), prefix="control_model.")
    studio.workspace.controlnet.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in original.items()}, studio.workspace.controlnet / "cn.safetensors")
    return studio


def test_the_request_pictures_go_with_the_answer_kept_or_not(client, cn_studio):
    """An img2img bot (init image, mask, a ControlNet unit; A1111's save_images false) must not fill
    studio/uploads; with save_images true the recipe points at its own copies and the uploads go too."""
    ws = cn_studio.workspace
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    edges = Image.new("RGB", (64, 64), 0)
    edges.paste((255, 255, 255), (20, 0, 24, 64))
    unit = {"enabled": True, "module": "none", "model": "cn", "image": _b64(edges)}
    body = {
        **TINY, "prompt": "red", "seed": 3, "init_images": [_b64(init)], "mask": _b64(mask),
        "denoising_strength": 0.6, "alwayson_scripts": {"controlnet": {"args": [unit]}},
    }  # fmt: skip
    uploads, kept = _files(uploads_dir(ws)), _kept(ws)
    answer = client.post("/sdapi/v1/img2img", json=body)
    assert answer.status_code == 200, answer.text
    assert _decode(answer.json()["images"][0]).size == (64, 64)
    job = cn_studio.list_jobs(limit=1)[0]
    request = job.payload["config"]
    assert request["init_image"] and request["mask"] and request["controlnet"][0]["image"]  # three pictures stored
    assert job.result["kept"] is False
    assert _files(uploads_dir(ws)) == uploads and _files(unsaved_root(ws)) == [] and _kept(ws) == kept

    # the x/y/z plot's ControlNet images too
    xyz = {"prompt": "red", "steps": 1, "width": 64, "height": 64, "seed": 7, "script_name": "x/y/z plot",
           "script_args": XYZ, "alwayson_scripts": {"controlnet": {"args": [unit]}}}  # fmt: skip
    answer = client.post("/sdapi/v1/txt2img", json=xyz)
    assert answer.status_code == 200, answer.text
    assert cn_studio.list_jobs(limit=1)[0].payload["config"]["controlnet"][0]["image"]
    assert _files(uploads_dir(ws)) == uploads and _files(unsaved_root(ws)) == [] and _kept(ws) == kept

    # save_images true: each recipe names its copies beside it, and the request's uploads go (were: kept forever)
    saved = client.post("/sdapi/v1/img2img", json={**body, "save_images": True})
    assert saved.status_code == 200, saved.text
    job = cn_studio.list_jobs(limit=1)[0]
    assert job.state == "succeeded" and _files(uploads_dir(ws)) == uploads
    assert not any(Path(p).exists() for p in (job.payload["config"]["init_image"], job.payload["config"]["mask"]))
    folder = ws.outputs / job.id
    recipe_file = next(folder.glob("*.yaml"))
    copies = sorted(p.name for p in (folder / "inputs").iterdir())
    assert len(copies) == 3 and all(f"inputs/{name}" in recipe_file.read_text(encoding="utf-8") for name in copies)
    from lorastudio.service.recipes import read_recipe

    again = read_recipe(recipe_file, ws).config  # the recipe still finds every picture
    assert all(Path(p).is_file() for p in (again.init_image, again.mask, again.controlnet[0].image))
    assert Path(again.init_image).parent == folder / "inputs"
    # the x/y/z plot kept: its unit's image goes too, its cells' recipes name their copy
    answer = client.post("/sdapi/v1/txt2img", json={**xyz, "save_images": True})
    assert answer.status_code == 200, answer.text
    assert _files(uploads_dir(ws)) == uploads
    assert len(list((ws.outputs / cn_studio.list_jobs(limit=1)[0].id).rglob("inputs/*.png"))) == 1


def test_the_sweep_removes_the_held_uploads_of_a_client_that_left(workspace):
    from lorastudio.service.jobs import open_store

    def stored() -> str:
        return save_upload(workspace, b"\x89PNG\r\n\x1a\n", ".png")

    with open_store(None, workspace) as store:
        left = store.enqueue("sleep", {"seconds": 0, "keep": False})
        held = [stored(), stored()]
        assert hold_request_uploads(workspace, left, [held[0], None, held[1]]) is True
        assert (unsaved_root(workspace) / left.id / REQUEST_UPLOADS).is_file()
        kept_job = store.enqueue("sleep", {"seconds": 0})
        kept_upload = stored()
        assert hold_request_uploads(workspace, kept_job, [kept_upload]) is True  # save_images true: once it succeeded
        assert hold_request_uploads(workspace, kept_job, [None]) is False
        # a folder whose job is gone from the queue: its listed uploads go with it
        orphan, orphan_upload = unsaved_root(workspace) / "gone", stored()
        orphan.mkdir()
        (orphan / REQUEST_UPLOADS).write_text(json.dumps([orphan_upload]), encoding="utf-8")

        assert sweep_unsaved(workspace, store, older_than_s=0) == ["gone"]  # `left` still queued
        assert upload_path(workspace, held[0]).is_file() and not (uploads_dir(workspace) / orphan_upload).exists()
        store.cancel(left.id)
        assert sweep_unsaved(workspace, store, older_than_s=0) == [left.id]
        assert sorted(p.name for p in uploads_dir(workspace).iterdir()) == [kept_upload]  # kept_job: queued
        assert not (workspace.outputs / kept_job.id).exists()


def test_a_kept_jobs_uploads_go_once_it_succeeded_and_stay_while_a_failed_one_is_on_record(workspace):
    """save_images true: the recipes name their copies in inputs/, so a succeeded job's uploads go (its
    release, or the sweep when the client left); a failed or cancelled job's stay until it is purged."""
    from lorastudio.service.jobs import open_store
    from lorastudio.service.unsaved import kept_uploads_list

    def stored() -> str:
        return save_upload(workspace, b"\x89PNG\r\n\x1a\n", ".png")

    def finished(state: str):
        job = store.enqueue("sleep", {"seconds": 0}, priority=9)  # claimed before `queued`
        claimed = store.claim("w")
        assert claimed.id == job.id
        assert store.finish(job.id, claimed.attempt, state, result={}, error=None if state == "succeeded" else state)
        return store.get(job.id)

    with open_store(None, workspace) as store:
        queued = store.enqueue("sleep", {"seconds": 0})
        upload = stored()
        hold_request_uploads(workspace, queued, [upload])
        assert release_job_files(workspace, store.get(queued.id)) is False  # not finished: stays
        assert upload_path(workspace, upload).is_file()

        answered = finished("succeeded")
        mine = [stored(), stored()]
        hold_request_uploads(workspace, answered, mine)
        assert release_job_files(workspace, answered) is False  # its files are kept ...
        assert not any((uploads_dir(workspace) / name).exists() for name in mine)  # ... its uploads are not
        assert not kept_uploads_list(workspace, answered.id).exists()

        left, failed, cancelled = finished("succeeded"), finished("failed"), finished("cancelled")
        held = {job.id: stored() for job in (left, failed, cancelled)}
        for job in (left, failed, cancelled):
            hold_request_uploads(workspace, job, [held[job.id]])
        for job in (failed, cancelled):
            assert release_job_files(workspace, job) is False
        assert all(upload_path(workspace, name).is_file() for name in held.values())
        # the client of `left` went away before its release: the sweep removes its uploads
        sweep_unsaved(workspace, store, older_than_s=3600)
        assert not (uploads_dir(workspace) / held[left.id]).exists()
        assert upload_path(workspace, held[failed.id]).is_file() and upload_path(workspace, held[cancelled.id]).is_file()
        # purged from the queue: nothing names them any more, and the sweep removes them once old enough
        store.purge(-1)
        sweep_unsaved(workspace, store, older_than_s=3600)
        assert upload_path(workspace, held[failed.id]).is_file()
        sweep_unsaved(workspace, store, older_than_s=0)
        assert sorted(p.name for p in uploads_dir(workspace).iterdir()) == [upload]
