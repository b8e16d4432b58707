"""README.md and the Makefile say what the commands do: the install line, every CLI option."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def torch_install_line(tmp_path: Path, *variables: str) -> str:
    """The pip command `make install` would run for torch (make -n: printed, nothing run)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    command = ["make", "-n", "-B", "-C", str(REPO), "install", f"VENV={tmp_path / 'venv'}", *variables]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    [line] = [line for line in printed.splitlines() if "pip install" in line and "torch==" in line]
    return line


def test_make_install_takes_torch_from_the_configured_index_unless_told(tmp_path):
    assert "--index-url" not in torch_install_line(tmp_path)  # CI's offline wheel mirror keeps working
    cpu = "https://download.pytorch.org/whl/cpu"
    assert torch_install_line(tmp_path, f"TORCH_INDEX={cpu}").endswith(f"--index-url {cpu}")
    assert f"make install TORCH_INDEX={cpu}" in README  # what a CPU-only machine runs


# -- every CLI option in README.md -----------------------------------------------------------------
# Where an option may be documented other than beside its own command, and why.
SAME_AS = {  # README: "(or `lorastudio import`)" etc.: the top-level verbs are the lora ones
    ("import",): ("lora", "import"),
    ("export",): ("lora", "export"),
    ("merge",): ("lora", "merge"),
}
ALSO_DOCUMENTED_BY = {("grid",): ("generate",)}  # README's grid synopsis: "[generate options: ...]"
EVERYWHERE = {"--help", "--json"}  # README: "Every command but the servers accepts `--json`"
COMMAND_WORD = r"[a-z][a-z0-9-]*(?:\|[a-z][a-z0-9-]*)*"


def readme_units(text: str) -> list[str]:
    """README in units a reader takes as one: a code line with its indented continuation lines, a
    bullet, a paragraph. A unit naming no command belongs to the one above it in its section (the
    bullets under `lorastudio generate`'s synopsis explain its options)."""
    units: list[list[str]] = []
    fence_indent = None  # inside a ``` block: the fence's indentation
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            fence_indent = None if fence_indent is not None else len(line) - len(stripped)
            units.append([])
            continue
        if fence_indent is not None:
            code = line[fence_indent:]
            if code[:1] not in (" ", "\t") or not units[-1]:
                units.append([])
            units[-1].append(code)
        elif not stripped or line.startswith("#"):
            units.append(["## section"] if line.startswith("#") else [])
        elif line.startswith("- ") or not units or not units[-1]:
            units.append([line])
        else:
            units[-1].append(line)
    return ["\n".join(unit) for unit in units if unit]


def commands_named(unit: str) -> set[tuple[str, ...]]:
    """`lorastudio jobs list|show` names ("jobs",), ("jobs", "list") and ("jobs", "show")."""
    named = set()
    for match in re.finditer(rf"lorastudio((?: {COMMAND_WORD})+)", unit):
        heads = [()]
        for word in match.group(1).split():
            heads = [(*head, alternative) for head in heads for alternative in word.split("|")]
            named.update(heads)
    return named


def documented_options() -> dict[tuple[str, ...], str]:
    """Command words -> the README text that documents them (units naming them, and those they own)."""
    about: dict[tuple[str, ...], list[str]] = {}
    owner: set[tuple[str, ...]] = set()
    for unit in readme_units(README):
        if unit == "## section":
            owner = set()
            continue
        named = commands_named(unit)
        owner = named or owner
        for words in owner:
            about.setdefault(words, []).append(unit)
    return {words: "\n".join(units) for words, units in about.items()}


def cli_commands():
    import typer

    from lorastudio.cli import _register, app

    _register()

    def walk(command, words):
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*words, name))
        if not hasattr(command, "commands"):
            yield words, command

    return list(walk(typer.main.get_command(app), ()))


def test_every_cli_option_is_in_the_readme_beside_its_command():
    documented = documented_options()
    missing = []
    for words, command in cli_commands():
        words = SAME_AS.get(words, words)
        text = documented.get(words, "") + "\n" + documented.get(ALSO_DOCUMENTED_BY.get(words, ()), "")
        for param in command.params:
            names = [name for name in getattr(param, "opts", []) + getattr(param, "secondary_opts", [])]
            names = [name for name in names if name.startswith("--")]
            if param.param_type_name != "option" or EVERYWHERE & set(names):
                continue
            if not any(re.search(re.escape(name) + r"(?![\w-])", text) for name in names):
                missing.append(f"lorastudio {' '.join(words)} {names[0]}")
    assert missing == [], "add these to README.md's synopses:\n" + "\n".join(missing)


def test_the_readme_template_caption_line_captions_a_captioned_set(workspace, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from lorastudio.cli import _register, app

    _register()
    pictures = tmp_path / "fox"
    pictures.mkdir()
    for name, colour in (("a", "red"), ("b", "blue")):
        Image.new("RGB", (64, 64), colour).save(pictures / f"{name}.png")
        (pictures / f"{name}.txt").write_text(f"a {colour} fox", encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(app, ["dataset", "import", str(pictures), "--name", "fox"]).exit_code == 0
    [line] = [line for line in README.splitlines() if line.startswith("lorastudio dataset caption NAME --template")]
    words = [{"NAME": "fox", "WORD": "zqx"}.get(word, word) for word in shlex.split(line)[1:]]
    result = runner.invoke(app, words)  # the README's line as written, NAME and WORD filled in
    assert result.exit_code == 0 and "2 of 2 captions set" in result.output, result.output
    captions = sorted(path.read_text(encoding="utf-8").strip() for path in (workspace.datasets / "fox").rglob("*.txt"))
    assert captions == ["a photo of zqx, a blue fox", "a photo of zqx, a red fox"]


# -- docs/TRAINING.md: the tables of other tools' keys name keys this lorastudio has ----------------
TRAINING = (REPO / "docs" / "TRAINING.md").read_text(encoding="utf-8")
KEY_WORD = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")


def training_section(title: str) -> str:
    start = TRAINING.index(f"\n## {title}\n")
    end = TRAINING.find("\n## ", start + 1)
    return TRAINING[start : end if end != -1 else None]


def table_rows(text: str) -> list[tuple[str, list[str]]]:
    """(the table's header line, the cells of a row) for every row of every table in `text`."""
    rows, header = [], ""
    for line in text.splitlines():
        if not line.startswith("|"):
            header = ""
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not header:
            header = line
        elif not set(line) <= set("|- "):
            rows.append((header, cells))
    return rows


def code_words(cell: str) -> list[str]:
    """The words of a cell's `code` spans, a trailing colon dropped (`lora_unet: [{...}]`)."""
    return [word.rstrip(":") for span in re.findall(r"`([^`]+)`", cell) for word in span.split()]


def unknown_names(cell: str, keys: set[str], options: set[str], commands: set[str]) -> list[str]:
    """Config keys (`key` or `key=value`), `--options` and `lorastudio COMMAND`s the cell names that do not exist."""
    wrong = []
    for span in re.findall(r"`([^`]+)`", cell):
        if span.startswith("lorastudio "):
            wrong += [] if span.split()[1] in commands else [span]
            continue
        for word in span.split():
            key = word.split("=", 1)[0]
            if word.startswith("--") and word not in options:
                wrong.append(word)
            elif not word.startswith("-") and KEY_WORD.fullmatch(key) and key not in keys:
                wrong.append(word)
    return wrong


def test_the_training_guides_tables_name_only_keys_and_options_that_exist():
    """The HCP-Diffusion and EasyPhoto tables (and the settings table) say which lorastudio key each
    of the other tool's settings is: every key, option and command they name exists, and each row
    names the key the `key=value` hints give for that tool's key (train.foreign_keys)."""
    from lorastudio.config import flatten_keys
    from lorastudio.train.config import TrainConfig
    from lorastudio.train.foreign_keys import EASYPHOTO_KEYS, HCP_KEYS

    keys = set(flatten_keys(TrainConfig().model_dump(mode="json")))
    found = cli_commands()
    options = {
        name
        for _, command in found
        for param in command.params
        for name in getattr(param, "opts", []) + getattr(param, "secondary_opts", [])  # --no-skin-retouch too
    }
    commands = {words[0] for words, _ in found if words}
    wrong, disagreeing, listed = [], [], set()
    tables = {"Coming from HCP-Diffusion": HCP_KEYS, "Portraits (EasyPhoto's training)": EASYPHOTO_KEYS}
    for title, hints in tables.items():
        for header, cells in table_rows(training_section(title)):
            wrong += unknown_names(cells[-1], keys, options, commands)
            if "visualizer" in header:  # inference settings: `lorastudio generate` options, no config keys
                continue
            right = {word.split("=", 1)[0] for word in code_words(cells[-1])}
            for word in code_words(cells[0]):
                listed.add(word)
                entry = hints.get(word)
                if entry is not None and entry.target is not None and entry.target not in right:
                    disagreeing.append(f"{title}: {word} -> {entry.target}, not in {cells[-1]!r}")
    for _, cells in table_rows(training_section("The settings people change")):
        wrong += unknown_names(cells[0], keys, options, commands)
    assert wrong == [], f"docs/TRAINING.md names keys or options lorastudio lacks: {wrong}"
    assert disagreeing == [], "\n".join(disagreeing)
    untold = [key for table in tables.values() for key, entry in table.items() if entry.target and key not in listed]
    assert untold == [], f"docs/TRAINING.md's tables leave out these keys the hints know: {untold}"
