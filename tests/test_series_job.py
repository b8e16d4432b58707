"""Story series as a job (API, UI): one image set per prompt, seeds by policy, a contact sheet."""

from __future__ import annotations

import pytest
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.generate.series import SeriesRequest, looks_like_yaml_list
from lorastudio.service.series import submit_series

BASE = GenerateConfig(model="tiny-sd15", width=64, height=64, steps=2, seed=7)


def test_a_series_renders_each_prompt_with_one_seed_and_a_contact_sheet(studio):
    request = SeriesRequest(prompts="red fox in a forest\n# a comment\n\nblue fox on a beach\n小红 在城市", seed_policy="fixed")
    job = submit_series(studio, BASE, request, user="ann")
    job = studio.wait_job(job.id, timeout=300)
    assert job.state == "succeeded", job.error
    assert len(job.result["images"]) == 3 and set(job.result["seeds"]) == {7}
    folder = studio.job_folder(job)
    sheet = Image.open(folder / job.result["contact_sheet"])
    assert sheet.width >= 3 * 64
    prompts = [Image.open(folder / name).text["parameters"].split("\n")[0] for name in job.result["images"]]
    assert prompts == ["red fox in a forest", "blue fox on a beach", "小红 在城市"]


def test_yaml_entries_set_their_own_fields_and_increment_counts_up(studio):
    request = SeriesRequest(prompts="- red\n- prompt: blue\n  seed: 100\n- green\n", seed_policy="increment")
    job = studio.wait_job(submit_series(studio, BASE, request).id, timeout=300)
    assert job.result["seeds"] == [7, 100, 9]


def test_a_series_is_checked_before_it_is_queued(studio):
    with pytest.raises(LorastudioError, match="no prompts"):
        submit_series(studio, BASE, SeriesRequest(prompts="# only a comment\n"))
    with pytest.raises(LorastudioError, match="lora"):
        submit_series(studio, BASE, SeriesRequest(prompts="a\nb <lora:../../etc/passwd:1>"))
    studio.settings.max_grid_cells = 2
    with pytest.raises(LorastudioError, match="max-grid-cells"):
        submit_series(studio, BASE, SeriesRequest(prompts="a\nb\nc"))
    assert studio.list_jobs() == []  # nothing was queued


def test_the_api_queues_a_series(client):
    body = {"config": BASE.model_dump(exclude_defaults=True), "series": {"prompts": "red\nblue"}}
    response = client.post("/api/v1/jobs/series", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["kind"] == "series"
    bad = client.post("/api/v1/jobs/series", json={"series": {"prompts": "a", "seed_policy": "sometimes"}})
    assert bad.status_code == 422 and "seed_policy" in bad.json()["detail"]


def test_a_pasted_list_is_yaml_only_when_it_looks_like_one():
    assert looks_like_yaml_list("- a\n- b") and looks_like_yaml_list("# story\nprompts:\n  - a")
    assert not looks_like_yaml_list("a girl - smiling\nnext: scene")
