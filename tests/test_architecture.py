"""The rules of docs/ARCHITECTURE.md, checked on the source so they hold.

Read with `ast` (nothing of the package is imported). Every import — at module level, inside a
function (lazy), under `if TYPE_CHECKING:`, or named as a "package.module:function" string that
importlib loads later — is held against the layer table; no modules may need each other in a
circle (module-level circles: none at all); fronts import no torch at import time; no file grows
past 600 lines. Today's known breaches are listed below, each with the work package that removes
it: a new breach fails the rule's test, and an entry that no longer breaks anything fails
`test_*_allow_list_is_current`, so the lists only shrink.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lorastudio"
MAX_LINES = 600

# Floors, lowest first: a module imports only from a lower floor or from its own package.
# Packages on one floor (data/generate, the fronts) do not import each other.
FLOORS: dict[str, int] = {
    "lorastudio": 0,  # the package root: __version__ only
    "errors": 0,
    "config": 1,
    "image_modes": 1,  # Pillow modes to 8 bits, for every reader of pictures
    "models": 2,
    "adapters": 3,
    "data": 4,
    "generate": 4,
    "portrait": 4,
    "train": 5,
    "service": 6,
    "api": 7,
    "cli": 7,
    "ui": 7,
    "__main__": 8,
}
FRONTS = {"api", "cli", "ui"}

# Imported inside the functions that need them, never on the way to a front (`lorastudio --help`).
HEAVY = {"torch", "diffusers", "transformers", "accelerate", "safetensors", "onnxruntime", "peft"}

# Fronts translate input and call service/: besides their own package they import service/,
# the root config/errors and the typed config models (`*.config`). `lorastudio serve` runs the app,
# and the app mounts the web UI (one process, one security layer).
FRONT_EXTRA: set[tuple[str, str]] = {
    ("lorastudio.cli.serve", "lorastudio.api.app"),
    ("lorastudio.api.app", "lorastudio.ui.app"),
}

# (importer, imported) pairs that break the rules today, each with the package that removes it
# (docs/RESTRUCTURING.md). WP8b = the second part of WP8.
ALLOWED_IMPORTS: dict[tuple[str, str], str] = {
}

# Import circles that exist today (module-level, lazy and TYPE_CHECKING imports all count:
# the modules need each other), each with the package that breaks it. A package's __init__
# importing its own submodules is not a circle (cli/ registers its verbs that way).
ALLOWED_CIRCLES: dict[frozenset[str], str] = {}

# Files over MAX_LINES today, with their line count as a ceiling: they may only shrink.
ALLOWED_LONG_FILES: dict[str, tuple[int, str]] = {
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    kind: str  # "module", "lazy" (inside a function), "type-checking" or "by-name" (see below)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    """The lorastudio modules one import statement names (`from pkg import sub` names pkg.sub)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    targets = []
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        targets.append(submodule if submodule in known else source)
    return targets


def _walk(node: ast.AST, kind: str):
    """Yield (import node, kind) for every import below node, knowing where it stands."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, kind
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, "lazy")
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), "type-checking")
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), kind)
        else:
            yield from _walk(child, kind)


def _by_name(tree: ast.AST, known: set[str]):
    """Strings like "lorastudio.service.job_handlers:train_handler": importlib loads them later."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            module, colon, attr = node.value.partition(":")
            if colon and module in known and attr.isidentifier():
                yield module, node.lineno


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


@functools.cache
def _imports() -> tuple[Import, ...]:
    modules = _modules()
    known = set(modules)
    found = []
    for module, path in modules.items():
        tree = _tree(path)
        for node, kind in _walk(tree, "module"):
            for target in _targets(module, path.name == "__init__.py", node, known):
                if target == "lorastudio" or target.startswith("lorastudio."):
                    found.append(Import(module, target, node.lineno, kind))
        found += [Import(module, target, line, "by-name") for target, line in _by_name(tree, known)]
    return tuple(found)


def _heavy_imports_at_module_level(path: Path) -> list[str]:
    heavy = []
    for node, kind in _walk(_tree(path), "module"):
        if kind != "module" or (isinstance(node, ast.ImportFrom) and node.level):
            continue
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        heavy += [name for name in names if name.split(".")[0] in HEAVY]
    return heavy


def _imported_at_start(module: str, graph: dict[str, set[str]]) -> set[str]:
    """Every lorastudio module that importing module runs (parent packages included)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen or current not in graph:
            continue
        seen.add(current)
        parts = current.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(graph[current])
    return seen


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _breach(importer: str, imported: str) -> str | None:
    """Why importer may not import imported, or None when the rules allow it."""
    source, target = _package(importer), _package(imported)
    if source == target:
        return None
    if source in FRONTS:
        allowed = (
            target in {"service", "config", "errors", "lorastudio"}
            or imported.endswith(".config")
            or (importer, imported) in FRONT_EXTRA
        )
        return None if allowed else f"a front imports {target}/ (only service/, config, errors, *.config)"
    if FLOORS[target] < FLOORS[source]:
        return None
    if FLOORS[target] == FLOORS[source]:
        return f"{source}/ and {target}/ stand on one floor and do not import each other"
    return f"{source}/ (floor {FLOORS[source]}) imports up into {target}/ (floor {FLOORS[target]})"


def _breaches() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for imp in _imports():
        why = _breach(imp.importer, imp.imported)
        if why:
            where = f"line {imp.line} ({imp.kind}): {why}"
            lines = found.setdefault((imp.importer, imp.imported), [])
            if where not in lines:
                lines.append(where)
    return found


def _circles(kinds: tuple[str, ...] = ("module", "lazy", "type-checking", "by-name")) -> list[frozenset[str]]:
    """Groups of modules (2+, or one importing itself) that import each other, by imports of kinds."""
    modules = _modules()
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for imp in _imports():
        own_child = modules[imp.importer].name == "__init__.py" and imp.imported.startswith(imp.importer + ".")
        if imp.kind in kinds and imp.imported in graph and not own_child and imp.imported != imp.importer:
            graph[imp.importer].add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                circles.append(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def _line_counts() -> dict[str, int]:
    return {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text(encoding="utf-8").splitlines())
        for path in _modules().values()
    }


def test_every_package_has_a_floor():
    missing = sorted({_package(module) for module in _modules()} - set(FLOORS))
    assert not missing, f"add these packages to FLOORS in tests/test_architecture.py: {missing}"


def test_imports_follow_the_layers():
    new = {pair: why for pair, why in _breaches().items() if pair not in ALLOWED_IMPORTS}
    assert not new, "imports against docs/ARCHITECTURE.md:\n" + "\n".join(
        f"  {a} -> {b}: {'; '.join(why)}" for (a, b), why in sorted(new.items())
    )


def test_import_allow_list_is_current():
    breaches = _breaches()
    stale = sorted(pair for pair in ALLOWED_IMPORTS if pair not in breaches)
    assert not stale, f"these imports are gone or now allowed: remove them from ALLOWED_IMPORTS: {stale}"


def test_no_import_circles():
    new = [sorted(circle) for circle in _circles() if circle not in ALLOWED_CIRCLES]
    assert not new, f"import circles: {new}"


def test_no_import_circles_at_module_level():
    """Python cannot import a module-level circle in every order: none, no exceptions."""
    assert not _circles(("module",)), "module-level import circles: " + str(
        [sorted(circle) for circle in _circles(("module",))]
    )


def test_circle_allow_list_is_current():
    circles = set(_circles())
    stale = [sorted(circle) for circle in ALLOWED_CIRCLES if circle not in circles]
    assert not stale, f"these circles are gone or changed: update ALLOWED_CIRCLES: {stale}"


def test_no_file_over_600_lines():
    too_long = {
        path: count
        for path, count in _line_counts().items()
        if count > ALLOWED_LONG_FILES.get(path, (MAX_LINES, ""))[0]
    }
    assert not too_long, f"split these files (at most {MAX_LINES} lines, or their ceiling): {too_long}"


def test_long_file_allow_list_is_current():
    counts = _line_counts()
    stale = sorted(path for path in ALLOWED_LONG_FILES if counts.get(path, 0) <= MAX_LINES)
    assert not stale, f"these files are gone or short now: remove them from ALLOWED_LONG_FILES: {stale}"


def test_fronts_import_no_torch_at_import_time():
    """A front module, and every module its import runs, leaves torch & co. to the functions."""
    modules = _modules()
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for imp in _imports():
        if imp.kind == "module" and imp.imported in graph:
            graph[imp.importer].add(imp.imported)
    found = {}
    for front in (module for module in modules if _package(module) in FRONTS):
        for module in _imported_at_start(front, graph):
            heavy = _heavy_imports_at_module_level(modules[module])
            if heavy:
                found[f"{front} -> {module}"] = heavy
    assert not found, f"fronts that import heavy modules at import time: {found}"


def test_the_checker_sees_every_kind_of_import(tmp_path):
    """The walker finds lazy and TYPE_CHECKING imports, not only module-level ones."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import lorastudio.models\n"
        "if TYPE_CHECKING:\n    from lorastudio.service import studio\n"
        "def f():\n    from lorastudio.train import trainer\n"
    )
    kinds = sorted(kind for _node, kind in _walk(ast.parse(source), "module"))
    assert kinds == ["lazy", "module", "module", "type-checking"]
    assert _breach("lorastudio.models.loading", "lorastudio.service.studio")
    assert _breach("lorastudio.api.native", "lorastudio.generate.pipeline")
    assert _breach("lorastudio.api.native", "lorastudio.generate.config") is None
    assert _breach("lorastudio.data.dataset", "lorastudio.generate.images")


def _named_forms(module: Path) -> set[str]:
    """How docs/ARCHITECTURE.md may name a module: `train/saving.py`, `train.saving`, `saving.py` (in its
    package's list), or by its last folder (`tabs/generate.py`, `jobs.worker`)."""
    parts = list(module.relative_to(PACKAGE).with_suffix("").parts)
    forms = {"/".join(parts) + ".py", "/".join(parts), ".".join(parts), parts[-1] + ".py"}
    if len(parts) >= 2:
        forms |= {"/".join(parts[-2:]) + ".py", "/".join(parts[-2:]), ".".join(parts[-2:])}
    return forms


def test_architecture_names_every_module():
    """docs/ARCHITECTURE.md is the map of what lives where: a new module gets a line there."""
    import re

    text = (PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    unnamed = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "__init__.py"
        and not any(re.search(r"(?<![\w/.])" + re.escape(form) + r"(?!\w)", text) for form in _named_forms(path))
    ]
    assert not unnamed, "say in docs/ARCHITECTURE.md what these modules hold: " + ", ".join(unnamed)
