"""The package's shape: its public names, its layers, and every module it names in a string."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import pytest

import appdomain

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "appdomain"
MARSHAL = ROOT / "marshal"


def _modules() -> dict[str, Path]:
    """Map every module of the installed layout (marshal/ as appdomain.marshal) to its file."""
    found: dict[str, Path] = {}
    for base, prefix in ((PACKAGE, "appdomain"), (MARSHAL, "appdomain.marshal")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


MODULES = _modules()


def _layers() -> list[str]:
    """Read the layer table at the top of appdomain/__init__.py, lowest layer first."""
    table = re.search(
        r"# The layers, lowest first.*?\n#\n(.*?)\n#\n", (PACKAGE / "__init__.py").read_text(), re.S
    )
    assert table is not None, "appdomain/__init__.py lost its table of layers"
    return [line[1:].split()[0].rstrip("/") for line in table.group(1).splitlines()]


LAYERS = _layers()


def _layer_of(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    if part in LAYERS:
        return LAYERS.index(part)
    # The facade (appdomain/__init__.py) and the plugin's entry-point shim stand at the top,
    # with the command.
    assert module in ("appdomain", "appdomain.pytest_plugin"), module
    return LAYERS.index("_cli")


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def _imports(module: str, path: Path) -> set[str]:
    """The appdomain modules this one imports at run time, lazily in a function or not."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in MODULES else base)
    return {t for t in targets if t in MODULES}


def test_the_layer_table_names_every_folder() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders | {"marshal", "_errors", "_aliases", "_info", "_cli"} == set(LAYERS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above_its_own(module: str) -> None:
    above = {
        target
        for target in _imports(module, MODULES[module])
        if _layer_of(target) > _layer_of(module)
    }
    assert not above


def test_public_names_are_listed_once_and_all_resolve() -> None:
    assert len(appdomain.__all__) == len(set(appdomain.__all__))
    for name in appdomain.__all__:
        assert getattr(appdomain, name) is not None


def test_every_public_object_has_one_public_name() -> None:
    objects = [getattr(appdomain, name) for name in appdomain.__all__]
    assert len({id(obj) for obj in objects}) == len(objects)


def test_every_lazy_name_is_public() -> None:
    assert set(appdomain._LAZY) <= set(appdomain.__all__)


def test_dir_lists_every_public_name() -> None:
    assert set(appdomain.__all__) <= set(dir(appdomain))


# A string that names an appdomain module: "appdomain.x.y", or "appdomain.x.y:op" (an
# operation its module provides, see _core/_serve.py).
_NAMED = re.compile(r"^appdomain(?:\.\w+)+(?::\w+)?$")


def _named_modules() -> set[str]:
    named: set[str] = set()
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.rstrip(":")
                if _NAMED.match(text):
                    named.add(text.partition(":")[0])
    for target in appdomain._LAZY.values():
        named.add(importlib.util.resolve_name(target, "appdomain"))
    return named


NAMED = sorted(_named_modules())


def test_strings_name_some_modules() -> None:
    assert "appdomain._remoting" in NAMED  # the operations a domain sends before remoting loads


@pytest.mark.parametrize("name", NAMED)
def test_every_module_named_in_a_string_imports(name: str) -> None:
    assert importlib.import_module(name).__name__ == name


def test_the_c_switch_stub_lists_exactly_what_the_module_has() -> None:
    ext = pytest.importorskip("appdomain._native._ext")
    stub = ast.parse((PACKAGE / "_native" / "_ext.pyi").read_text())
    declared = {
        node.name for node in stub.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))
    }
    built = {name for name in dir(ext) if not name.startswith("__")}
    assert declared == built
