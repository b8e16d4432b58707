"""Job kinds: typed `jobs submit`, one folder rule, one payload shape, a registry its starter fills."""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from lorastudio.errors import LorastudioError
from lorastudio.service.datasets import dataset_folder, import_dataset
from lorastudio.service.job_kinds import KINDS, CaptionJobConfig, install, job_folder, submit_job, typed_job
from lorastudio.service.jobs import HandlerRegistry, default_registry, open_store
from lorastudio.service.jobs.context import JobContext, WorkerInfo
from lorastudio.service.jobs.worker import Worker
from lorastudio.service.studio import Studio, StudioSettings
from lorastudio.train.config import saved_train_config
from test_dataset_models import build_tiny_wd14

TRAIN_YAML = {
    "model": "tiny-sd15",
    "trigger": "zq",
    "data": {"dir": "reds"},
    "train": {"steps": 4, "resolution": 64},
}


def test_jobs_submit_refuses_an_unknown_key_with_one_line_naming_the_right_one(cli, workspace):
    result = cli("jobs", "submit", "generate", "--payload", '{"config":{"stepz":3}}')
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "stepz" in lines[0] and "steps" in lines[0].replace("stepz", "")
    unknown_kind = cli("jobs", "submit", "paint", "--payload", "{}")
    assert unknown_kind.exit_code == 2 and "generate" in unknown_kind.output
    extra = cli("jobs", "submit", "generate", "--payload", '{"config": {}, "grid": {}}')
    assert extra.exit_code == 2 and "'grid'" in extra.output
    with open_store(None, workspace) as store:
        assert store.list_jobs() == []


def test_jobs_submit_train_from_a_file_queues_what_saved_train_config_loads(cli, workspace, tmp_path):
    (workspace.datasets / "reds").mkdir()
    config = tmp_path / "t.yaml"
    config.write_text(yaml.safe_dump(TRAIN_YAML), encoding="utf-8")
    result = cli("jobs", "submit", "train", "--config", str(config), "train.steps=5", "--json")
    assert result.exit_code == 0, result.output
    job_id = json.loads(result.stdout)["id"]
    with open_store(None, workspace) as store:
        job = store.get(job_id)
    assert set(job.payload) == {"config", "run"} and job.payload["run"] == "zq"
    cfg = saved_train_config(job.payload["config"])
    assert (cfg.model, cfg.trigger, cfg.data.dir, cfg.train.steps) == ("tiny-sd15", "zq", "reds", 5)
    assert cfg.output.name == "zq" and (workspace.runs / "zq").is_dir()  # reserved as the API reserves it
    # the same path as the API's submit_train: the same payload for the same config
    with Studio(workspace, StudioSettings()) as studio:
        same, _ = typed_job("train", file=config, overrides=["train.steps=5", "output.name=zq-api"])
        api_job = studio.submit_train(same)
    expected = {**job.payload["config"], "output": {**job.payload["config"]["output"], "name": "zq-api"}}
    assert api_job.payload["config"] == expected


def test_a_train_jobs_folder_is_its_run_folder_everywhere(workspace):
    (workspace.datasets / "reds").mkdir()
    with Studio(workspace, StudioSettings()) as studio:
        cfg, _ = typed_job("train", payload={"config": TRAIN_YAML})
        train = studio.submit_train(cfg)
        generate = studio.submit("generate", {"config": {"prompt": "red"}})
        registry = install(HandlerRegistry())
        for job, expected in ((train, workspace.runs / "zq"), (generate, workspace.outputs / generate.id)):
            ctx = JobContext(job, studio.store, workspace, WorkerInfo(None, "w"), registry.folder(workspace, job))
            assert ctx.artifacts_dir == studio.job_folder(job) == job_folder(workspace, job) == expected
            assert expected.is_dir()


def test_every_kind_takes_a_config_payload_and_the_worker_installs_them(workspace):
    registry = install(HandlerRegistry())
    assert set(KINDS) <= set(registry.kinds())
    application_kinds = set(KINDS) - {"sleep"}
    assert "sleep" in default_registry and not application_kinds & set(default_registry.kinds())
    cfg, extras = typed_job("grid", payload={"prompt": "red", "grid": {"x": {"axis": "seed", "values": "1,2"}}})
    assert cfg.prompt == "red" and extras["grid"].x.values == "1,2"  # the flat shape reads the same
    with pytest.raises(LorastudioError, match="payload grid: unknown key 'xx'. Did you mean 'x'"):
        typed_job("grid", payload={"config": {}, "grid": {"xx": 1}})
    (workspace.datasets / "reds").mkdir()
    with Studio(workspace, StudioSettings()) as studio:  # what /api/v1/jobs/<id> shows as payload
        (workspace.models / "tagger").mkdir()
        caption, _ = typed_job("caption", overrides=["dataset=reds", "tagger.model=tagger"])
        queued = studio.submit_caption(caption).payload
        assert list(queued) == ["config"] and queued["config"]["dataset"] == "reds"
        assert CaptionJobConfig.model_validate(queued["config"]).tagger is not None
        sleep, _ = typed_job("sleep", payload={"seconds": 0})
        assert submit_job(studio, "sleep", sleep).payload == {"config": sleep.model_dump()}


def test_a_worker_with_an_empty_registry_refuses_generate_clearly(workspace):
    with open_store(None, workspace) as store:
        job = store.enqueue("generate", {"config": {"prompt": "red"}})
        worker = Worker(store, workspace, registry=HandlerRegistry(), kinds=["generate"])
        assert worker.run(stop_when_idle=True) == 1
        failed = store.get(job.id)
    assert failed.state == "failed"
    assert "job kind 'generate': no handler registered; known kinds: none" in failed.error


def test_a_flat_caption_job_queued_before_the_change_still_runs(workspace, tmp_path):
    source = tmp_path / "colours"
    source.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(source / "red.png")
    import_dataset(workspace, "colours", [source])
    tagger = build_tiny_wd14(tmp_path / "wd14")
    with open_store(None, workspace) as store:
        old = store.enqueue("caption", {"dataset": "colours", "tagger": {"model": str(tagger)}})
        Worker(store, workspace, registry=install(HandlerRegistry())).run(stop_when_idle=True)
        done = store.get(old.id)
    assert done.state == "succeeded", done.error
    assert done.result["written"] == 1
    folder = dataset_folder(workspace, "colours")
    assert "red hair" in folder.read_caption(folder.items[0])
