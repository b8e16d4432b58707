"""Every `lorastudio ... --help` shows what its source says: Typer renders help as Rich markup, where a
`[word]` is a style tag and vanishes unless written `\\[word]`."""

from __future__ import annotations

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
