"""Tab logic without a browser: an import's report under its counts, a pasted recipe's prompt styles
picked again, and the lone sub-grid files of X/Y/Z plots removed when the next pictures replace them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from PIL import Image

from lorastudio.generate.infotext import save_png
from lorastudio.ui.i18n import translator


def test_the_import_result_shows_refused_files_and_the_caption_notes_in_the_pages_language(workspace, tmp_path):
    from lorastudio.service.datasets import import_dataset
    from lorastudio.ui.tabs.datasets import IMPORT_LINES_SHOWN, import_result_markup

    source = tmp_path / "src"
    source.mkdir()
    for i, stem in enumerate(("both_1", "kohya")):
        Image.new("RGB", (32, 32), (200, 30 * i, 30)).save(source / f"{stem}.png")
    (source / "both_1.txt").write_text("red, square", encoding="utf-8")
    (source / "both_1.caption").write_text("a red square", encoding="utf-8")
    (source / "meta_cap.json").write_text(json.dumps({"kohya": {"caption": "a square"}}), encoding="utf-8")
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    result = import_dataset(workspace, "reds", [source])
    assert result["failed_files"] and len(result["notes"]) == 2  # what `lorastudio dataset import` prints

    shown = import_result_markup(SimpleNamespace(t=translator("en")), result)
    assert shown.startswith("Imported reds: 2 images (1 files refused, 0 skipped)")
    assert "**Refused**" in shown and "broken.png: " in shown
    assert "**Notes**" in shown and r"both\_1" not in shown  # a note names counts, not files
    assert "had both .txt and .caption captions: read .txt" in shown
    assert "captioned from meta\\_cap.json" in shown  # Markdown's emphasis escaped: the words as written
    zh = import_result_markup(SimpleNamespace(t=translator("zh")), result)
    assert zh.startswith("已导入 reds：2 张图片") and "**未导入**" in zh and "**说明**" in zh

    many = {"name": "x", "total_images": 0, "failed_files": [{"source": f"{i}.gif", "reason": "bad"} for i in range(60)]}
    lines = import_result_markup(SimpleNamespace(t=translator("en")), many).splitlines()
    assert len([line for line in lines if line.endswith(".gif: bad")]) == IMPORT_LINES_SHOWN
    assert lines[-1] == f"- … and {60 - IMPORT_LINES_SHOWN} more"


def test_a_pasted_prompt_holding_styles_picks_them_and_generating_again_gives_the_same_prompt(workspace, tmp_path):
    """A1111's "Apply if any": both texts of a style found in the pasted prompts are taken out of them
    and the style is picked; with a hires prompt, only when it holds the same styles."""
    from lorastudio.service.styles import apply_styles
    from lorastudio.ui.tabs.png_info import _recipe, styles_picker_update

    (workspace.root / "styles.csv").write_text(
        'name,prompt,negative_prompt\nFilm,"{prompt}, film grain",blurry\nSharp,sharp focus,\nUnused,oil,\n',
        encoding="utf-8",
    )
    ctx = SimpleNamespace(studio=SimpleNamespace(workspace=workspace, model="tiny-sd15"), t=translator("en"))
    prompt, negative = apply_styles(workspace, "a cat", "lowres", ["Film", "Sharp"])
    text = f"{prompt}\nNegative prompt: {negative}\nSteps: 5, Sampler: Euler, Seed: 1, Size: 64x64, Model: tiny-sd15"

    values, _ = _recipe(ctx, str(save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", text)))
    assert (values["prompt"], values["negative_prompt"], values["styles"]) == ("a cat", "lowres", ["Film", "Sharp"])
    assert styles_picker_update(ctx, values["styles"])["value"] == ["Film", "Sharp"]
    assert apply_styles(workspace, values["prompt"], values["negative_prompt"], values["styles"]) == (prompt, negative)

    same = text + f', Hires upscale: 2, Hires prompt: "{prompt.replace("a cat", "a dog")}"'
    values, _ = _recipe(ctx, str(save_png(Image.new("RGB", (8, 8)), tmp_path / "b.png", same)))
    assert (values["prompt"], values["hires_prompt"], values["styles"]) == ("a cat", "a dog", ["Film", "Sharp"])
    other = text + ', Hires upscale: 2, Hires prompt: "a dog"'  # A1111 keeps such prompts whole
    values, _ = _recipe(ctx, str(save_png(Image.new("RGB", (8, 8)), tmp_path / "c.png", other)))
    assert (values["prompt"], values["styles"]) == (prompt, [])
    assert styles_picker_update(ctx, values["styles"]) == {"__type__": "update"}  # the picker as it was

    (workspace.root / "styles.csv").unlink()  # no styles file: the prompts as written
    values, _ = _recipe(ctx, str(save_png(Image.new("RGB", (8, 8)), tmp_path / "d.png", text)))
    assert (values["prompt"], values["negative_prompt"], values["styles"]) == (prompt, negative, [])


def test_lone_sub_grid_files_go_when_the_next_plot_replaces_them_and_when_the_session_ends(tmp_path, monkeypatch):
    from lorastudio.ui.generate_run import SUB_GRID_FOLDER, _follow, forget_lone_sub_grids

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    jobs = {}
    for job_id in ("job1", "job2"):
        save_png(Image.new("RGB", (64, 80)), outputs / f"{job_id}-grid.png", "red\nSteps: 1, Script: X/Y/Z plot")
        result = {"grid": f"{job_id}-grid.png", "lone_sub_grid_top": 16, "sub_grid_infotexts": ["red\nSteps: 1"],
                  "include_sub_images": False}  # fmt: skip
        jobs[job_id] = SimpleNamespace(id=job_id, finished=True, state="succeeded", result=result, user="")
    studio = SimpleNamespace(
        get_job=jobs.get, job_images=lambda job: [], job_folder=lambda job: outputs,
        workspace=SimpleNamespace(cache=tmp_path / "cache"),
    )  # fmt: skip
    ctx = SimpleNamespace(studio=studio, t=translator("en"))
    temp = tmp_path / "gradio" / SUB_GRID_FOLDER

    first = list(_follow(ctx, "job1"))[-1][-1]
    assert len(first) == 2 and [p.name for p in temp.iterdir()] == ["job1-job1-grid-z1.png"]
    second = list(_follow(ctx, "job2", shown=first))[-1][-1]
    assert [p.name for p in temp.iterdir()] == ["job2-job2-grid-z1.png"]  # the folder does not grow
    forget_lone_sub_grids(second)  # the gallery's state deleted with its session
    assert not list(temp.iterdir()) and (outputs / "job2-grid.png").is_file()  # the saved grid stays


@pytest.mark.slow
def test_the_page_wires_the_paste_to_the_styles_picker_and_the_gallery_state_to_its_cleanup(tiny_workspace, tmp_path):
    """PNG info's "Send to Generate" on the built page (no browser): its answer fills the Styles picker
    and the prompt box; the gallery's state removes its lone sub-grids when its session is deleted."""
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.ui.app import build_blocks
    from lorastudio.ui.generate_run import forget_lone_sub_grids

    (tiny_workspace.root / "styles.csv").write_text("name,prompt,negative_prompt\nFilm,film grain,blurry\n", encoding="utf-8")
    text = "a cat, film grain\nNegative prompt: blurry\nSteps: 5, Sampler: Euler, Seed: 1, Size: 64x64, Model: tiny-sd15"
    image = save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", text)
    studio = Studio(tiny_workspace, StudioSettings())
    try:
        blocks = build_blocks(studio, "en")
    finally:
        studio.close()
    by_id = lambda fn, elem_id: next(i for i, c in enumerate(fn.outputs) if getattr(c, "elem_id", None) == elem_id)  # noqa: E731
    send = next(fn for fn in blocks.fns.values() if any(getattr(c, "elem_id", None) == "styles" for c in fn.outputs)
                and any(getattr(c, "elem_id", None) == "png-image" for c in fn.inputs))  # fmt: skip
    answer = send.fn(str(image), "tiny-sd15")
    assert len(answer) == len(send.outputs)
    assert answer[by_id(send, "styles")]["value"] == ["Film"]
    assert answer[by_id(send, "field-prompt")]["value"] == "a cat"
    states = [c for c in blocks.blocks.values() if getattr(c, "delete_callback", None) is forget_lone_sub_grids]
    assert len(states) == 1


def test_the_train_tab_names_the_run_it_showed_once_the_jobs_record_is_purged():
    from lorastudio.errors import NotFoundError
    from lorastudio.ui.tabs.train import _run_of

    jobs = {"j1": SimpleNamespace(payload={"run": "小红"})}

    def get_job(job_id):
        if job_id not in jobs:
            raise NotFoundError(f"job {job_id}: not found.", key="job_not_found", params={"id": job_id})
        return jobs[job_id]

    ctx = SimpleNamespace(studio=SimpleNamespace(get_job=get_job))
    assert _run_of(ctx, "j1", "") == "小红"  # the State the tab keeps, from the job it follows
    jobs.clear()  # `lorastudio jobs purge`
    assert _run_of(ctx, "j1", "小红") == "小红" and _run_of(ctx, "j1", "", quiet=True) == ""
    with pytest.raises(NotFoundError):
        _run_of(ctx, "j1", "")  # no run shown: the job's own "not found"
