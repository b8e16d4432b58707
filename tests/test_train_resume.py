"""`train --resume` after config.yaml was edited: a key that reshapes the saved state is refused with
one line naming it, a longer budget resumes, a changed data set is said."""

from __future__ import annotations

import pytest
import yaml

from lorastudio.errors import LorastudioError
from lorastudio.service.training import run_training
from training_helpers import tiny_train_config, write_images

pytestmark = pytest.mark.slow  # one short training run, resumed (~10 s)


def _edit(config_path, **changes) -> None:
    data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_an_edited_config_that_reshapes_the_state_is_refused_and_a_longer_budget_resumes(
    tiny_workspace, tmp_path, capsys
):
    ws = tiny_workspace
    data = write_images(tmp_path / "red", [((230, 20 + i, 25), "zqx") for i in range(3)])
    cfg = tiny_train_config(
        data, "zqx", "method=pivotal", "train.steps=4", "train.save_every_steps=2", "lora.rank=4",
        "output.name=edited", "scoring.enabled=false",
    )
    run_training(ws, cfg, progress=False, stop_at_step=2)
    config = ws.runs / "edited" / "config.yaml"
    original = config.read_text(encoding="utf-8")

    for changes, named in (
        ({"lora__rank": 8}, "lora.rank 4 -> 8"),
        ({"method": "lora"}, 'method "pivotal" -> "lora"'),
        ({"embedding__num_vectors": 3, "lora__targets": "attn"}, '"kohya" -> "attn", embedding.num_vectors'),
        ({"train__ema_decay": 0.99}, "train.ema_decay null -> 0.99"),
    ):
        config.write_text(original, encoding="utf-8")
        _edit(config, **changes)
        with pytest.raises(LorastudioError, match="config.yaml changes what step-2 trained") as refused:
            run_training(ws, resume="edited", progress=False)
        assert named in str(refused.value) and "put the old value back" in str(refused.value)
        assert "\n" not in str(refused.value)

    # A longer run, other rates, one more image: it resumes (and says the data set changed).
    config.write_text(original, encoding="utf-8")
    _edit(config, train__steps=6, train__learning_rate=5e-5, lora__dropout=0.1)
    write_images(tmp_path / "more", [((10, 10, 10), "zqx")])
    (tmp_path / "more" / "0.png").rename(data / "9.png")
    capsys.readouterr()
    events: list[dict] = []
    result = run_training(ws, resume="edited", progress=True, callback=events.append)
    assert result["finished"] and result["step"] == 6
    said = capsys.readouterr().err
    assert "data set: changed since the checkpoint (3 images then, 4 now)" in said
    # the restored optimizer and schedule keep the saved rates: the edit is said, not silently dropped
    assert "rates: train.learning_rate " in said and "-> 5e-05" in said and "keep the saved ones" in said
    logged = [e["line"] for e in events if e.get("event") == "log"]  # what a UI or API job log shows
    assert any(line.startswith("data set: changed") for line in logged) and any(line.startswith("rates:") for line in logged)


def test_an_edited_caption_with_the_same_images_is_said_on_resume(tiny_workspace, tmp_path, capsys):
    """Same folder, same count: only a fingerprint of the pictures and captions can tell (it went unsaid)."""
    data = write_images(tmp_path / "red", [((230, 20 + i, 25), "zqx") for i in range(3)])
    cfg = tiny_train_config(
        data, "zqx", "train.steps=4", "train.save_every_steps=2", "lora.rank=2", "output.name=recaptioned",
        "scoring.enabled=false",
    )  # fmt: skip
    run_training(tiny_workspace, cfg, progress=False, stop_at_step=2)
    (data / "1.txt").write_text("zqx, a blue square", encoding="utf-8")
    capsys.readouterr()
    assert run_training(tiny_workspace, resume="recaptioned", progress=True)["step"] == 4
    assert "data set: changed since the checkpoint (pictures or captions edited)" in capsys.readouterr().err


def test_a_key_the_checkpoints_config_predates_is_not_a_change():
    """A checkpoint saved before `lora.type` existed resumes: only keys both configs hold are compared."""
    import json

    from lorastudio.train.resume import check_resumable

    now = {"model": "m", "method": "lora", "lora": {"rank": 4, "type": "lora"}, "train": {}}
    old = {"model": "m", "method": "lora", "lora": {"rank": 4}, "train": {}}
    check_resumable(now, {"ss_lorastudio_config": json.dumps(old)}, "run", "step-2")  # no refusal
    with pytest.raises(LorastudioError, match="lora.rank 2 -> 4"):
        old["lora"]["rank"] = 2
        check_resumable(now, {"ss_lorastudio_config": json.dumps(old)}, "run", "step-2")
