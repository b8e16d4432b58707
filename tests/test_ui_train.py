"""The Train tab end to end in headless Chromium: a tiny run started from the generated form,
followed live (progress, a sample image), cancelled and resumed; and a run named "小红" trained
to the end, found in the Library and used by a `<lora:小红:1>` prompt on the Generate tab.

tiny-sd15 at 64 px on a 3-image data set made here: a training step takes a fraction of a second.
"""

from __future__ import annotations

import pytest
from PIL import Image

from browser import cancel_unfinished, logged_in_page

pytestmark = pytest.mark.slow

NAME = "小红"


@pytest.fixture(scope="module", autouse=True)
def reds(served, tmp_path_factory):
    """A three-picture data set of red squares, `reds`, in the served workspace."""
    from lorastudio.service.datasets import import_dataset

    source = tmp_path_factory.mktemp("reds")
    for i in range(3):
        Image.new("RGB", (64, 64), (200 + i * 20, 30, 30)).save(source / f"{i}.png")
        (source / f"{i}.txt").write_text("zq, red square", encoding="utf-8")
    import_dataset(served.studio.workspace, "reds", [source])


@pytest.fixture
def page(served, browser):
    with logged_in_page(served, browser, tab="Train") as page:
        page.wait_for_selector("#train-start")
        yield page
        cancel_unfinished(served.studio)


def _box(page, key: str):
    return page.locator(f"#train-field-{key.replace('.', '-')}").locator("textarea, input").first


def _set(page, key: str, value: object) -> None:
    """Type into the control of config key `key` and leave it (the change fires on blur)."""
    box = _box(page, key)
    box.fill(str(value))
    box.press("Tab" if not key.endswith("prompts") else "Control+End")


def _open(page, section: str, first_key: str) -> None:
    """Unfold a section and wait until its controls are drawn (they mount when it opens)."""
    page.locator(f"#train-section-{section}").locator("button").first.click()
    _box(page, first_key).wait_for(state="visible")


def _tiny_run(page, name: str, steps: int, every: int) -> None:
    """A tiny-sd15 run on the 'reds' data set at 64 px, a sample (and a checkpoint) every `every` steps."""
    _open(page, "train", "train.save_every_steps")
    _open(page, "samples", "samples.prompts")
    _open(page, "scoring", "scoring.steps")
    page.wait_for_timeout(500)  # the folded controls have their first value before they are typed into
    values = {
        "output.name": name, "model": "tiny-sd15", "data.dir": "reds", "trigger": "zq", "train.steps": steps,
        "train.resolution": 64, "train.learning_rate": 0.001, "train.save_every_steps": every,
        "samples.prompts": "zq, red square", "samples.every_steps": every, "samples.steps": 2, "scoring.steps": 2,
    }  # fmt: skip
    for key, value in values.items():
        _set(page, key, value)
    for key, value in values.items():
        assert _box(page, key).input_value() == str(value), key


def _wait_text(page, selector: str, text: str, timeout: int = 120_000) -> str:
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel) || {}).innerText?.includes(text)",
        arg=[selector, text],
        timeout=timeout,
    )
    return page.locator(selector).inner_text()



def _reload_and_see_job(page, job_id: str) -> None:
    """Reload the page, open the Train tab and wait until it shows job `job_id` again."""
    page.reload()
    page.get_by_role("tab", name="Train", exact=True).click()
    page.wait_for_function(
        "(id) => (document.querySelector('#train-job-id textarea, #train-job-id input') || {}).value === id",
        arg=job_id,
    )

def test_a_run_is_followed_live_then_cancelled_and_resumed(served, page):
    studio = served.studio
    _tiny_run(page, "cancel-me", steps=5000, every=2)
    page.click("#train-start")
    _wait_text(page, "#train-progress", "Step")
    page.wait_for_selector("#train-samples img", timeout=120_000)  # the first sample image, while it trains
    job_id = page.locator("#train-job-id textarea, #train-job-id input").first.input_value()
    assert studio.get_job(job_id).payload["config"]["train"]["save_every_steps"] == 2  # the folded field counts
    _events(page, studio, job_id, "checkpoint")  # so Resume has a checkpoint to start from
    assert studio.get_job(job_id).state == "running"
    page.click("#train-cancel")
    _wait_text(page, "#train-message", "Cancelled")
    assert studio.get_job(job_id).state == "cancelled"

    page.click("#train-resume")
    page.wait_for_function(
        "(old) => { const box = document.querySelector('#train-job-id textarea, #train-job-id input');"
        " return box && box.value && box.value !== old; }",
        arg=job_id,
    )
    resumed = page.locator("#train-job-id textarea, #train-job-id input").first.input_value()
    assert resumed != job_id and studio.get_job(resumed).payload["run"] == "cancel-me"
    plans = _events(page, studio, resumed, "plan")  # the same run folder, from its checkpoint
    assert plans[0]["start_step"] >= 2
    page.click("#train-cancel")
    _wait_text(page, "#train-message", "Cancelled")


def test_a_preset_fills_the_form_and_a_reload_follows_the_running_run(served, page, tmp_path):
    page.locator("#train-preset input").first.click()
    page.get_by_role("option", name="character", exact=True).click()
    page.wait_for_function(
        "() => (document.querySelector('#train-field-train-epochs_per_image input') || {}).value === '100'"
    )
    assert page.locator("#train-field-method input").first.input_value() == "pivotal"
    assert "pivotal" in page.locator("#train-preset-about").inner_text().lower()
    page.screenshot(path=str(tmp_path / "train.png"), full_page=True)

    _tiny_run(page, "reloaded", steps=5000, every=2)
    page.click("#train-start")
    _wait_text(page, "#train-progress", "Step")
    job_id = page.locator("#train-job-id textarea, #train-job-id input").first.input_value()
    _reload_and_see_job(page, job_id)
    _wait_text(page, "#train-progress", "Step")
    page.click("#train-cancel")
    _wait_text(page, "#train-message", "Cancelled")
    assert served.studio.get_job(job_id).state == "cancelled"


def test_a_cancelled_run_says_where_it_stopped_and_resumes_after_a_reload(served, page):
    """After Cancel no running "Step n/N … ETA" line stays; a reload (or a server restart) shows the
    user's cancelled run, so Resume queues it again from its checkpoint."""
    studio = served.studio
    _tiny_run(page, "reload-resume", steps=5000, every=2)
    page.click("#train-start")
    _wait_text(page, "#train-progress", "Step")
    job_id = page.locator("#train-job-id textarea, #train-job-id input").first.input_value()
    _events(page, studio, job_id, "checkpoint")
    page.click("#train-cancel")
    _wait_text(page, "#train-message", "Cancelled")
    progress = _wait_text(page, "#train-progress", "Stopped at step")
    assert "ETA" not in progress, progress

    _reload_and_see_job(page, job_id)
    _wait_text(page, "#train-message", "Cancelled")
    page.click("#train-resume")
    page.wait_for_function(
        "(old) => { const box = document.querySelector('#train-job-id textarea, #train-job-id input');"
        " return box && box.value && box.value !== old; }",
        arg=job_id,
    )
    resumed = page.locator("#train-job-id textarea, #train-job-id input").first.input_value()
    assert studio.get_job(resumed).payload["run"] == "reload-resume"
    assert _events(page, studio, resumed, "plan")[0]["start_step"] >= 2
    page.click("#train-cancel")
    _wait_text(page, "#train-message", "Cancelled")


def _events(page, studio, job_id: str, kind: str) -> list[dict]:
    """The job's events of `kind`, once there is one (the run is followed by the browser meanwhile)."""
    for _ in range(1200):
        found = [e.data for e in studio.job_events(job_id) if e.type == kind]
        if found:
            return found
        assert not studio.get_job(job_id).finished, studio.get_job(job_id).error
        page.wait_for_timeout(100)
    raise AssertionError(f"job {job_id} sent no {kind} event")


def test_a_refused_form_says_why_next_to_start(served, page):
    _set(page, "model", "tiny-sd15")
    _set(page, "data.dir", "no-such-set")
    page.click("#train-start")
    text = _wait_text(page, "#train-message", "Error", timeout=30_000)
    assert "no-such-set" in text and "Traceback" not in text


def test_a_chinese_named_run_reaches_the_library_and_a_prompt(served, page, tmp_path):
    from lorastudio.service.loras import list_loras
    from lorastudio.service.train_runs import run_progress

    studio = served.studio
    _tiny_run(page, NAME, steps=4, every=2)
    page.click("#train-start")
    _wait_text(page, "#train-message", f"Finished: the LoRA {NAME}", timeout=180_000)
    assert NAME in {row["name"] for row in list_loras(studio.workspace)}
    page.locator("#train-checkpoints").scroll_into_view_if_needed()  # the table draws rows in view only
    table = _wait_text(page, "#train-checkpoints", "✓")  # the best step, and the one in the library
    assert [row["step"] for row in run_progress(studio.workspace, NAME)["scores"]] == [2, 4]
    assert "In library" in table
    page.screenshot(path=str(tmp_path / "finished.png"), full_page=True)
    step = page.locator("#train-pick-step input").first
    step.fill("2")
    step.press("Tab")
    page.click("#train-use-checkpoint")
    _wait_text(page, "#train-picked", "Step 2")
    run = studio.workspace.runs / NAME
    assert run_progress(studio.workspace, NAME)["result_step"] == 2
    assert (studio.workspace.loras / f"{NAME}.safetensors").read_bytes() == (
        run / "checkpoints" / "step-2" / f"{NAME}.safetensors"
    ).read_bytes()

    page.get_by_role("tab", name="Library", exact=True).click()
    page.click("#loras-refresh")
    _wait_text(page, "#loras-table", NAME)

    page.get_by_role("tab", name="Generate", exact=True).click()
    page.locator("#field-prompt textarea").fill(f"zq, red square <lora:{NAME}:1>")
    for key, value in (("width", 64), ("height", 64), ("steps", 3), ("seed", 5)):
        box = page.locator(f"#field-{key} input[type=number], #field-{key} input").first
        box.fill(str(value))
        box.press("Tab")
    page.click("#generate-run")
    page.wait_for_function(
        "(name) => (document.querySelector('#infotext textarea') || {}).value?.includes('Lora hashes')",
        arg=NAME,
        timeout=120_000,
    )
    assert NAME in page.locator("#infotext textarea").input_value()
