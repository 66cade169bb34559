"""The package's layers, held against its imports (docs/ARCHITECTURE.md draws the same)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests.support.layering import check, read_edges

PACKAGE_ROOT = Path(__file__).resolve().parents[3] / "proxyd"

# Lowest first. A piece imports only from itself and the pieces before it.
LAYERS = [
    "_lazy",
    "errors",
    "protocol",
    "learning",
    "config",
    "access",
    "resolver",
    "outbound",
    "routing",
    "runtime",
    "mirror",
    "dataplane",
    "firstvisit",
    "inbound",
    "ops",
    "daemon",
    "cli",
    "__main__",
]


def test_the_package_keeps_its_layers_faces_and_no_cycles() -> None:
    assert check(PACKAGE_ROOT, "proxyd", LAYERS) == []


def test_the_reader_sees_the_package_at_all() -> None:
    # A reader that found nothing would pass the test above on any tree.
    edges = read_edges(PACKAGE_ROOT, "proxyd")
    assert any(e.importer == "proxyd.daemon" and e.imported == "proxyd.inbound" for e in edges)
    assert len(edges) > 150


@pytest.mark.parametrize("piece", ["protocol", "learning"])
def test_sans_io_packages_import_no_event_loop(piece: str) -> None:
    # Bytes in, events out: anything that needs the loop belongs a layer up.
    for path in (PACKAGE_ROOT / piece).glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"asyncio", "uvloop", "selectors"}, path.name


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


FIXTURE_LAYERS = ["low", "high"]
CLEAN = {
    "__init__.py": "",
    "low/__init__.py": "from pkg.low._impl import thing\n",
    "low/_impl.py": "thing = 1\n",
    "high/__init__.py": "",
    "high/_one.py": "from pkg.low import thing\nfrom pkg.high import _two\n",
    # A type-only import closes no cycle at run time.
    "high/_two.py": "from typing import TYPE_CHECKING\n"
    "if TYPE_CHECKING:\n"
    "    from pkg.high._one import x\n",
}


def test_fixture_tree_without_breaches_is_clean(tmp_path: Path) -> None:
    assert check(_tree(tmp_path, CLEAN), "pkg", FIXTURE_LAYERS) == []


@pytest.mark.parametrize(
    "source",
    [
        "from pkg.high import anything\n",
        "def later():\n    from pkg.high._one import x\n",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import T\n",
        "import pkg.high._two\n",
    ],
    ids=["module-level", "inside-a-function", "type-only", "plain-import"],
)
def test_an_upward_import_is_named_with_both_modules(tmp_path: Path, source: str) -> None:
    root = _tree(tmp_path, {**CLEAN, "low/_impl.py": "thing = 1\n" + source})
    upward = [p for p in check(root, "pkg", FIXTURE_LAYERS) if "above it" in p]
    assert len(upward) == 1
    assert upward[0].startswith("pkg.low._impl (line ") and " imports pkg.high" in upward[0]


def test_a_runtime_cycle_is_named_with_both_modules(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**CLEAN, "high/_two.py": "def f():\n    from pkg.high._one import x\n"})
    problems = check(root, "pkg", FIXTURE_LAYERS)
    assert len(problems) == 1
    assert problems[0].startswith("import cycle at run time")
    assert "pkg.high._one -> pkg.high._two" in problems[0]
    assert "pkg.high._two -> pkg.high._one" in problems[0]


def test_a_relative_import_cycle_is_found(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**CLEAN, "high/_two.py": "from ._one import x\n"})
    assert any("import cycle" in p for p in check(root, "pkg", FIXTURE_LAYERS))


def test_reaching_behind_another_packages_face_is_named(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**CLEAN, "high/_one.py": "from pkg.low._impl import thing\n"})
    problems = check(root, "pkg", FIXTURE_LAYERS)
    assert problems == [
        "pkg.high._one (line 1) imports pkg.low._impl: a private module behind the face of pkg.low"
    ]


def test_a_module_outside_every_layer_is_named(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**CLEAN, "stray.py": ""})
    assert check(root, "pkg", FIXTURE_LAYERS) == ["pkg.stray belongs to no declared layer"]
