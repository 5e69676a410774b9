"""The package's house rules, read from its source: every module sits in a
layer, imports only from its own layer and the layers under it (imports
under ``TYPE_CHECKING`` and inside functions count), no two modules import
each other even through others, and no module or class grows past the
size a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vmcore_tools"
#: the layers, lowest first: a module imports from its own layer and those before it
LAYERS = ("core", "arch", "mm", "kernel", "net", "census", "refs", "leaks", "report", "cli")
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # "from pkg import mod" imports a module; "from mod import name" the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def layer_of(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_every_module_is_in_a_layer():
    stray = [n for n in modules() if n != "vmcore_tools" and layer_of(n) is None]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_no_module_imports_from_a_layer_above_it():
    upward = [f"{src} -> {dst}" for src, dsts in graph().items() for dst in sorted(dsts)
              if src != "vmcore_tools" and layer_of(src) is not None
              and (layer_of(dst) is None or layer_of(dst) > layer_of(src))]
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    cycles = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(g[n]):
            if state.get(m) == 1:
                cycles.append(" -> ".join(path[path.index(m):] + [n, m]) if m in path else f"{n} -> {m}")
            elif m not in state:
                visit(m, path + [n])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_and_class_sizes(name):
    path = modules()[name]
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{name}: {text.count(chr(10))} lines"
    big = [(n.name, n.end_lineno - n.lineno + 1) for n in ast.walk(ast.parse(text))
           if isinstance(n, ast.ClassDef) and n.end_lineno - n.lineno + 1 > MAX_CLASS_LINES]
    assert not big, f"{name}: classes over {MAX_CLASS_LINES} lines: {big}"


def test_the_rule_sees_type_checking_and_local_imports(tmp_path):
    """The reader counts what Python would hide: an import under
    ``TYPE_CHECKING`` and one inside a function."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vmcore_tools.cli import main\n"
                   "def f():\n    from vmcore_tools.leaks import orphans\n")
    found = imports_of("vmcore_tools.core.m", src, {"vmcore_tools.cli.main", "vmcore_tools.leaks.orphans"})
    assert found == {"vmcore_tools.cli.main", "vmcore_tools.leaks.orphans"}


def test_every_name_imported_from_the_package_exists():
    """Tests, benchmarks and helpers import names that the package still
    has: a name a move left behind fails here, not at a kernel test's
    collection."""
    import importlib
    repo = PACKAGE.parent
    missing = []
    for path in sorted([*repo.glob("tests/**/*.py"), *repo.glob("benchmarks/*.py"), *repo.glob("helpers/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("vmcore_tools"):
                module = importlib.import_module(node.module)
                missing += [f"{path.relative_to(repo)}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name)
                            and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing, missing
