"""The web UI's parts without a browser: labels in both languages, controls from config fields,
saved preferences."""

from __future__ import annotations

import pytest

from lorastudio.errors import LorastudioError
from lorastudio.generate.config import GenerateConfig
from lorastudio.service.preferences import load_preferences, save_preferences
from lorastudio.ui.forms import field_spec, optional_number
from lorastudio.ui.i18n import LABELS, translator


def test_every_label_has_an_english_and_a_chinese_text():
    for key, (english, chinese) in LABELS.items():
        assert english.strip() and chinese.strip(), key
        assert english.count("{") == chinese.count("{"), f"{key}: both texts take the same values"


def test_a_missing_label_is_an_error_not_an_english_word():
    with pytest.raises(KeyError):
        translator("zh")("no.such.label")
    assert translator("zh")("progress.done", seconds=3) == "完成，用时 3 秒"


def test_every_recipe_note_the_service_can_give_has_a_label_in_both_languages():
    """PNG info words each note by its key (`png.<key>`): a key without a label broke the paste
    of an img2img image (`pictures_not_carried`)."""
    import re
    from pathlib import Path

    import lorastudio

    source = "\n".join(p.read_text(encoding="utf-8") for p in Path(lorastudio.__file__).parent.rglob("*.py"))
    keys = set(re.findall(r'RecipeNote\(\s*"([a-z_]+)"', source))
    assert len(keys) >= 15  # the pattern still finds the notes
    assert sorted(key for key in keys if f"png.{key}" not in LABELS) == []


def test_controls_take_limits_default_and_tooltip_from_the_config_field():
    steps = field_spec(GenerateConfig, "steps")
    assert (steps.kind, steps.default, steps.minimum, steps.maximum) == ("int", 20, 1, 500)
    assert "Sampling steps" in steps.description
    assert field_spec(GenerateConfig, "cfg_scale").kind == "float"
    assert field_spec(GenerateConfig, "inpaint_only_masked").kind == "bool"
    assert field_spec(GenerateConfig, "width").default is None
    assert optional_number(0) is None and optional_number(64.0) == 64


@pytest.mark.slow
def test_both_pages_build_and_the_chinese_one_has_no_english_label_left(tiny_workspace):
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.ui.app import build_blocks

    studio = Studio(tiny_workspace, StudioSettings())
    try:
        configs = {lang: build_blocks(studio, lang).get_config_file() for lang in ("en", "zh")}
    finally:
        studio.close()
    shown = {lang: _shown_texts(config) for lang, config in configs.items()}
    # Every picture a user gives is passed on as the file itself: Gradio's default image_mode "RGB"
    # re-saved an RGBA upload with its transparency turned black (and a PNG without its text chunks).
    pictures = [
        c["props"] for c in configs["en"]["components"]
        if c.get("type") == "image" and c["props"].get("interactive") is not False and c["props"].get("type") == "filepath"
    ]  # fmt: skip
    assert {p["elem_id"] for p in pictures} >= {"init-image", "extras-source", "png-image"}
    assert all(p.get("image_mode") is None for p in pictures), [(p["elem_id"], p.get("image_mode")) for p in pictures]
    assert "生成" in shown["zh"] and "Generate" in shown["en"]
    english_only = {en for en, zh in LABELS.values() if en != zh}
    leftovers = sorted(shown["zh"] & english_only)
    assert not leftovers, f"English labels on the Chinese page: {leftovers}"


def _shown_texts(config: dict) -> set[str]:
    """Labels of controls and tabs and the text of buttons: what a reader of the page sees."""
    texts = set()
    for component in config["components"]:
        props = component.get("props", {})
        if isinstance(props.get("label"), str):
            texts.add(props["label"])
        if component.get("type") == "button" and isinstance(props.get("value"), str):
            texts.add(props["value"])
    return texts


def test_preferences_are_saved_in_the_workspace_and_checked(workspace):
    assert load_preferences(workspace).language == "en"
    save_preferences(workspace, language="zh", steps=30)
    assert load_preferences(workspace).language == "zh" and load_preferences(workspace).steps == 30
    with pytest.raises(LorastudioError, match="langauge"):
        save_preferences(workspace, langauge="zh")
    with pytest.raises(LorastudioError, match="steps"):
        save_preferences(workspace, steps=0)
    assert load_preferences(workspace).steps == 30  # a refused change writes nothing


def test_a_damaged_preferences_file_names_itself_and_the_fix(workspace):
    (workspace.root / "preferences.json").write_text("{not json")
    with pytest.raises(LorastudioError, match="preferences.json.*delete the file"):
        load_preferences(workspace)


def test_the_inpaint_painter_strokes_become_a_white_mask_over_black():
    from PIL import Image

    from lorastudio.ui.generate_run import mask_from_editor

    background = Image.new("RGB", (64, 48), "red")
    stroke = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    stroke.paste((255, 255, 255, 128), (10, 10, 20, 20))  # half-transparent paint still counts
    image, mask = mask_from_editor({"background": background, "layers": [stroke], "composite": None})
    assert image.size == (64, 48) and mask.mode == "L"
    assert mask.getpixel((15, 15)) == 255 and mask.getpixel((40, 40)) == 0
    assert mask.getbbox() == (10, 10, 20, 20)
    empty = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    assert mask_from_editor({"background": background, "layers": [empty]}) is None  # nothing painted
    assert mask_from_editor(None) is None


def test_a_picture_in_the_painter_with_nothing_painted_is_said_not_dropped(workspace):
    """It ran as txt2img without a word (the picture silently left out)."""
    from types import SimpleNamespace

    from PIL import Image

    from lorastudio.errors import InvalidRequest
    from lorastudio.ui.generate_run import form_config

    ctx = SimpleNamespace(studio=SimpleNamespace(workspace=workspace))
    values = {"prompt": "red", "model": "tiny-sd15", "steps": 1, "width": 64, "height": 64}
    empty = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    painter = {"background": Image.new("RGB", (64, 48), "red"), "layers": [empty]}
    with pytest.raises(InvalidRequest, match="^inpaint: nothing is painted on the picture; paint the part"):
        form_config(ctx, values, painter)
    assert form_config(ctx, values, {"background": None, "layers": []}).init_image is None  # an empty painter


def test_every_training_key_has_a_label_in_both_languages():
    from lorastudio.service.train_runs import form_keys

    unlabelled = [key for key in form_keys() if f"trainform.{key}" not in LABELS]
    assert not unlabelled, f"add trainform.<key> labels (English and Chinese) to ui/i18n.py: {unlabelled}"


def _browser_request(**state):
    """What gr.Request wraps: the HTTP request whose state the security middleware wrote."""
    from types import SimpleNamespace

    return SimpleNamespace(request=SimpleNamespace(state=SimpleNamespace(**state)))


def test_a_reload_follows_a_queued_generation_by_the_callers_rule(tiny_workspace):
    """Auth off: the studio's queued generation is followed whoever queued it (it was shown to
    nobody when queued under a name while auth was on); auth on: only the caller's own."""
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.ui.context import UiContext
    from lorastudio.ui.generate_run import follow_running

    studio = Studio(tiny_workspace, StudioSettings())  # not started: the job stays queued
    callers = {
        "auth off": _browser_request(auth=False),
        "alice": _browser_request(auth=True, user="alice"),
        "bob": _browser_request(auth=True, user="bob"),
        "unnamed token": _browser_request(auth=True),
    }
    first = {}
    try:
        ctx = UiContext.create(studio, "en")
        studio.submit_generate(GenerateConfig(model="tiny-sd15", prompt="alice's", steps=2), user="alice")
        for caller, request in callers.items():
            followed = follow_running(ctx, request)
            first[caller] = next(followed)[0]
            followed.close()
    finally:
        studio.close()
    assert "Queued" in str(first["auth off"]) and "Queued" in str(first["alice"]), first
    assert not isinstance(first["bob"], str) and not isinstance(first["unnamed token"], str), first


def test_a_picture_sets_only_blank_size_boxes_to_its_size_in_multiples_of_8(tmp_path):
    from PIL import Image

    from lorastudio.ui.generate_run import size_from_picture

    photo = tmp_path / "photo.png"
    Image.new("RGB", (523, 300)).save(photo)
    width, height = size_from_picture(str(photo), 0, None)
    assert (width["value"], height["value"]) == (520, 296)
    kept = size_from_picture(str(photo), 512, 0)  # one box typed: the user's size stays
    assert all("value" not in update for update in kept)
    painter = {"background": Image.new("RGB", (40, 900)), "layers": []}
    assert [u["value"] for u in size_from_picture(painter, None, None)] == [64, 896]
    assert all("value" not in update for update in size_from_picture(painter, None, None, True))  # only masked
    assert all("value" not in update for update in size_from_picture(None, 0, 0))
    sideways = tmp_path / "phone.jpg"  # stored 300x200, shown 200x300 (EXIF orientation 6)
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    Image.new("RGB", (300, 200)).save(sideways, exif=exif)
    assert [u["value"] for u in size_from_picture(str(sideways), None, None)] == [200, 296]
    assert all("value" not in update for update in size_from_picture(str(tmp_path / "gone.png"), None, None))


def test_library_sizes_have_their_unit_so_a_small_embedding_is_not_zero_mb():
    from lorastudio.ui.tabs.library import file_size

    assert file_size(12 * 1024) == "12 KB" and file_size(300) == "1 KB" and file_size(None) == ""
    assert file_size(5 * 2**20) == "5.0 MB" and file_size(2 * 2**30) == "2.0 GB"


@pytest.mark.slow
def test_wide_checkboxes_get_room_in_the_generate_form(tiny_workspace):
    """Pad prompt has a line of its own (its help overflowed a slider row's third); the X/Y/Z
    plot's seven checkboxes wrap onto two rows."""
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.ui.app import build_blocks

    studio = Studio(tiny_workspace, StudioSettings())
    try:
        config = build_blocks(studio, "en").get_config_file()
    finally:
        studio.close()
    ids = {c["id"]: c for c in config["components"]}
    by_elem = {c["props"].get("elem_id"): c["id"] for c in config["components"] if c.get("props", {}).get("elem_id")}
    rows = []

    def cells(node) -> list[int]:  # a row's cells, through the forms Gradio wraps controls in
        found = []
        for child in node.get("children", []):
            is_form = ids.get(child["id"], {}).get("type") == "form"
            found += cells(child) if is_form else [child["id"]]
        return found

    def walk(node):
        if ids.get(node["id"], {}).get("type") == "row":
            rows.append(cells(node))
        for child in node.get("children", []):
            walk(child)

    walk(config["layout"])
    pad = by_elem["field-pad_conds"]
    assert not any(pad in row and len(row) > 1 for row in rows)
    grid_boxes = {by_elem[f"grid-{name}"] for name in ("draw-legend", "keep-seeds", "vary-seeds-x", "vary-seeds-z")}
    assert max(len(grid_boxes & set(row)) for row in rows) == 2  # not all four in one row
