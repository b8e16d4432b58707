"""The help line under a form control on the Chinese page is Chinese (`ui/field_help.py`); the
English page keeps the config field's description, the one text CLI --help and the API docs show."""

from __future__ import annotations

import re

import pytest

from lorastudio.generate.config import GenerateConfig
from lorastudio.service.train_runs import form_keys
from lorastudio.ui.field_help import field_help

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_every_training_form_field_has_a_chinese_help_line():
    missing = []
    for key, (model, name) in form_keys().items():
        english = field_help(model, name, "en")
        assert english == (model.model_fields[name].description or "").strip(), key
        chinese = field_help(model, name, "zh")
        if english and (chinese == english or not CJK.search(chinese)):
            missing.append(f"{model.__name__}.{name} ({key})")
    assert not missing, f"no Chinese help line for: {missing}"


def test_the_page_language_picks_the_help_line():
    from lorastudio.ui.field_help import page_language

    english = GenerateConfig.model_fields["steps"].description
    assert field_help(GenerateConfig, "steps") == english  # no page being built: English
    with page_language("zh"):
        chinese = field_help(GenerateConfig, "steps")
        assert field_help(GenerateConfig, "steps", "en") == english
    assert "采样步数" in chinese and "'Steps'" in chinese
    assert field_help(GenerateConfig, "steps") == english


@pytest.mark.slow
def test_the_chinese_page_shows_chinese_help_and_the_english_page_is_unchanged(tiny_workspace):
    from lorastudio.service.studio import Studio, StudioSettings
    from lorastudio.ui.app import build_blocks

    studio = Studio(tiny_workspace, StudioSettings())
    try:
        pages = {lang: build_blocks(studio, lang).get_config_file()["components"] for lang in ("en", "zh")}
    finally:
        studio.close()

    def infos(language: str, elem_id: str) -> list[str]:
        return [c["props"].get("info") for c in pages[language] if c.get("props", {}).get("elem_id") == elem_id]

    # every help line the Chinese page shows (generated from a config field or not) is Chinese
    english_left = sorted(
        {c["props"]["info"] for c in pages["zh"] if c.get("props", {}).get("info") and not CJK.search(c["props"]["info"])}
    )
    assert not english_left, f"English help lines on the Chinese page: {english_left}"

    # the Generate tab's steps slider (the first `field-steps`; Settings has one too)
    assert infos("en", "field-steps")[0] == GenerateConfig.model_fields["steps"].description
    assert infos("zh", "field-steps")[0] == field_help(GenerateConfig, "steps", "zh")
    assert "采样步数" in infos("zh", "field-steps")[0]
    # a Train tab field: the key first on both pages, the description in the page's language
    model, name = form_keys()["output.name"]
    english = model.model_fields[name].description
    assert infos("en", "train-field-output-name") == [f"output.name: {english}"]
    (chinese,) = infos("zh", "train-field-output-name")
    assert chinese.startswith("output.name: ") and CJK.search(chinese) and "File name" not in chinese
