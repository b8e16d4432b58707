"""`tag_agreement`: the character's booru tags found in a checkpoint's images (tiny WD14 tagger).

The tagger is the ONNX graph of test_dataset_models: tag scores are sigmoids of the mean
colour, so red pictures get `red hair`, `long hair` and `alice (character)`, blue ones don't.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from lorastudio.train.config import TrainConfig
from lorastudio.train.scoring import SCORERS, Checkpoint, ScoringContext
from lorastudio.train.tag_scoring import (
    _REFERENCE_CACHE,
    caption_tags,
    normalise_tag,
    reference_tags,
    tag_agreement,
)
from test_dataset_models import build_tiny_wd14

TRIGGER = "zqx"
RED, PINK, BLUE = (255, 0, 0), (153, 0, 0), (0, 0, 255)  # pink: red hair + long hair, not alice


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    return build_tiny_wd14(tmp_path_factory.mktemp("tagger") / "wd14")


@pytest.fixture(scope="module")
def tagger(tagger_dir):
    from lorastudio.train.tag_scoring import _tagger

    return _tagger(str(tagger_dir))


def _square(path, colour, size=32):
    Image.new("RGB", (size, size), colour).save(path)
    return path


def _data_set(folder, items: list[tuple[tuple[int, int, int], str]], size=32):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (colour, caption) in enumerate(items):
        _square(folder / f"{i}.png", colour, size)
        (folder / f"{i}.txt").write_text(caption, encoding="utf-8")
    return folder


def test_spelling_is_the_same_for_captions_and_tagger():
    assert normalise_tag(" Long_Hair ") == "long hair"
    assert normalise_tag("alice_\\(character\\)") == normalise_tag("alice (character)") == "alice (character)"
    assert normalise_tag("^_^") == "^_^"  # kaomoji keep their underscore
    assert caption_tags("zqx, red_hair,  long  hair, ,solo") == {"zqx", "red hair", "long hair", "solo"}


def test_reference_is_caption_tags_in_half_the_images_known_to_the_tagger(tagger, tmp_path):
    captions = [
        "zqx, red_hair, long hair, solo, red square",
        "zqx, Red Hair, blue sky, red square",
        "zqx, red hair, long_hair, red square",
        "zqx, smile, red square, general",
    ]
    # red hair 3/4, long hair 2/4 (half counts); solo / blue sky 1/4; the trigger, the
    # tagger-unknown "red square"/"smile" and the rating "general" are never reference tags.
    assert reference_tags(tagger, captions, [], TRIGGER) == ["red hair", "long hair"]


def test_plain_text_captions_fall_back_to_tagging_the_training_images(tagger, tmp_path):
    paths = [_square(tmp_path / f"{i}.png", c) for i, c in enumerate([RED, RED, RED, BLUE])]
    captions = ["a photo of zqx standing in a field"] * 4
    reference = set(reference_tags(tagger, captions, paths, TRIGGER))
    # in >= 2 of 4 images: the three red ones' tags, plus those every image gets
    assert {"red hair", "long hair", "alice (character)"} <= reference
    assert "blue sky" not in reference  # only one image is blue


def test_score_is_the_share_of_character_tags_found(tagger, tmp_path):
    reference = ["red hair", "long hair", "alice (character)"]
    red, pink, blue = (_square(tmp_path / f"{n}.png", c) for n, c in [("r", RED), ("p", PINK), ("b", BLUE)])
    assert tag_agreement(tagger, reference, [red]) == 1.0
    assert tag_agreement(tagger, reference, [pink]) == pytest.approx(2 / 3)
    assert tag_agreement(tagger, reference, [blue]) == 0.0
    assert tag_agreement(tagger, reference, [red, blue]) == pytest.approx(0.5)


def _context(workspace, data_dir, tagger_model: str, generated) -> ScoringContext:
    cfg = TrainConfig.model_validate(
        {
            "model": "tiny-sd15",
            "trigger": TRIGGER,
            "data": {"dir": str(data_dir)},
            "scoring": {"tagger_model": tagger_model},
        }
    )
    return ScoringContext(workspace, workspace.runs / "r", cfg, None, [TRIGGER], [], "", None, generated)


def test_scorer_ranks_the_checkpoint_that_draws_the_character_higher(workspace, tagger_dir, tmp_path):
    data = _data_set(tmp_path / "alice", [(RED, "zqx, red_hair, long_hair, alice_(character)")] * 2)
    good = [_square(tmp_path / "good.png", RED), _square(tmp_path / "ok.png", PINK)]
    bad = [_square(tmp_path / "bad.png", BLUE), _square(tmp_path / "bad2.png", BLUE)]
    ctx = _context(workspace, data, str(tagger_dir), {2: bad, 4: good})
    scorer = SCORERS["tag_agreement"]
    assert scorer.higher_is_better and scorer.unavailable(ctx) is None
    scores = {
        step: scorer.score(ctx, Checkpoint(step, tmp_path, tmp_path / "x", None), None) for step in (2, 4)
    }
    assert scores == {2: 0.0, 4: pytest.approx((1 + 2 / 3) / 2)}
    cached = [key for key in _REFERENCE_CACHE if key[0] == str(tagger_dir) and str(data) in key[2][0][0]]
    assert len(cached) == 1  # computed once for the run, not once per checkpoint
    assert sorted(_REFERENCE_CACHE[cached[0]]) == ["alice (character)", "long hair", "red hair"]


def test_unavailable_names_the_setting_and_the_missing_file(workspace, tmp_path):
    data = _data_set(tmp_path / "d", [(RED, "zqx, red hair")])
    unavailable = SCORERS["tag_agreement"].unavailable
    assert "scoring.tagger_model" in unavailable(_context(workspace, data, "", {}))
    half = tmp_path / "half"
    half.mkdir()
    (half / "model.onnx").write_bytes(b"")
    reason = unavailable(_context(workspace, data, str(half), {}))
    assert reason.startswith("scoring.tagger_model:") and "selected_tags.csv" in reason
    assert "\n" not in reason


@pytest.mark.slow
def test_score_run_and_cli_with_a_tagger_on_a_tiny_run(
    tiny_workspace, tagger_dir, tmp_path, one_torch_thread
):
    """Train 4 steps (checkpoints 2 and 4); tag_agreement decides the best; the CLI option works."""
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app
    from lorastudio.service.training import run_training
    from lorastudio.train.scoring import score_run
    from training_helpers import tiny_train_config

    ws = tiny_workspace
    items = [(RED, f"{TRIGGER}, red_hair, long hair")] * 2 + [(PINK, "red hair")]
    data = _data_set(tmp_path / "red", items, size=64)
    settings = ("train.steps=4", "train.save_every_steps=2", "lora.rank=2", "output.name=tagged")
    cfg = tiny_train_config(data, TRIGGER, *settings, "scoring.steps=2", "scoring.enabled=false")
    run_training(ws, cfg, progress=False, device="cpu")
    table = score_run(
        ws, "tagged", scorers=["tag_agreement", "validation_loss"], tagger_model=str(tagger_dir)
    )
    assert table["decided_by"] == "tag_agreement" and not table["skipped"]
    scores = [row["scores"]["tag_agreement"] for row in table["rows"]]
    assert [row["step"] for row in table["rows"]] == [2, 4]
    assert all(0.0 <= s <= 1.0 for s in scores)
    tied = [row for row in table["rows"] if row["scores"]["tag_agreement"] == max(scores)]
    # the best tag agreement wins; a tie on it goes to the next scorer (lower validation loss)
    assert table["best_step"] == min(tied, key=lambda row: row["scores"]["validation_loss"])["step"]

    _register()
    cli = CliRunner().invoke(app, ["train", "score", "tagged", "--tagger-model", str(tagger_dir), "--json"])
    assert cli.exit_code == 0, cli.output
    again = json.loads(cli.stdout.strip().splitlines()[-1])
    assert [r["scores"] for r in again["rows"]] == [r["scores"] for r in table["rows"]]
    assert again["decided_by"] == "validation_loss"  # the run's default list: validation_loss first
    assert "tag_agreement" in again["scorers"]
