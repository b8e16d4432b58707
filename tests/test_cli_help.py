"""What the command line shows: every `--help` says what its source says (Typer renders help as Rich
markup, where a `[word]` is a style tag and vanishes unless written `\\[word]`), `train score|pick --help`
their own usage, `--json` on every command that is not a server, a line for an empty list."""

from __future__ import annotations

import json
import re

import pytest
import typer
import typer.rich_utils
from typer.testing import CliRunner

from lorastudio.cli import _register, app


def all_commands():
    """(words, click command) for the root, every group and every command, e.g. (("control", "list"), cmd)."""
    _register()

    def walk(command, words):
        yield words, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*words, name))

    return list(walk(typer.main.get_command(app), ()))


def source_help_texts(command) -> list[str]:
    """The help the source gives: the command's docstring and each option's and argument's help."""
    texts = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
    return [text for text in texts if text]


@pytest.fixture
def render_help(monkeypatch):
    """`lorastudio WORDS --help` as plain text on one very wide line per row (no wrapping, no colour)."""
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 4000)
    monkeypatch.setattr(typer.rich_utils, "FORCE_TERMINAL", False)
    runner = CliRunner()

    def render(words) -> str:
        result = runner.invoke(app, [*words, "--help"])
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    return render


def test_no_bracketed_word_of_the_source_vanishes_from_any_help(render_help):
    lost = []
    for words, command in all_commands():
        shown = render_help(words)
        for text in source_help_texts(command):
            written = " ".join(text.replace("\\[", "[").split())  # `\[` is how the source keeps a bracket
            lost += [(" ".join(words), token) for token in re.findall(r"\[[^\[\]]*\]", written) if token not in shown]
    assert lost == []


def test_control_list_help_shows_the_title_with_its_hash(render_help):
    assert "A1111 title `name [hash8]`" in render_help(("control", "list"))


@pytest.mark.parametrize("word", ["score", "pick", "presets"])
def test_train_words_answer_help_with_their_own_usage(render_help, word):
    shown = render_help(("train", word))
    assert shown.startswith(f"Usage: lorastudio train {word}")
    assert "--kohya-config" not in shown  # not train's own help


def test_train_score_still_runs_after_its_help_was_taught(workspace):
    result = CliRunner().invoke(app, ["train", "score", "nope", "--json"])
    assert result.exit_code == 2 and "run 'nope'" in result.output


SERVERS = {("serve",), ("worker",)}  # run until stopped: no result to print as JSON


def test_every_command_but_the_servers_takes_json():
    lacking = [
        " ".join(words)
        for words, command in all_commands()
        if not hasattr(command, "commands") and words not in SERVERS
        and not any("--json" in getattr(param, "opts", ()) for param in command.params)
    ]
    assert lacking == []


@pytest.mark.parametrize(
    ("words", "says"),
    [
        (("portrait", "people"), "no people yet: `lorastudio portrait train"),
        (("portrait", "templates", "list"), "no templates yet: `lorastudio portrait templates add FILE`"),
        (("lora", "list"), "no LoRAs yet: train one (`lorastudio train`) or `lorastudio lora import FILE`"),
    ],
)
def test_an_empty_list_says_so_and_how_to_fill_it(workspace, words, says):
    result = CliRunner().invoke(app, list(words))
    assert result.exit_code == 0 and result.output.startswith(says), result.output


def test_templates_delete_prints_json(workspace):
    from PIL import Image

    folder = workspace.root / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64)).save(folder / "beach.png")
    result = CliRunner().invoke(app, ["portrait", "templates", "delete", "beach", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"deleted": "beach"} and not (folder / "beach.png").exists()
