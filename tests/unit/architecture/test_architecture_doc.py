"""docs/ARCHITECTURE.md names functions, classes and files: each must exist in the code."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "ARCHITECTURE.md"
PACKAGE = REPO / "proxyd"


@functools.cache
def _definitions() -> frozenset[str]:
    """Every ``def`` and ``class`` in the package, by bare name and as Class.method."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        names.add(f"{node.name}.{item.name}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
    return frozenset(names)


def _named_calls(text: str) -> set[str]:
    return set(re.findall(r"`([A-Za-z_][\w.]*)\(\)`", text))


def _named_files(text: str) -> set[str]:
    return set(re.findall(r"`([\w/]+\.py)`", text))


def test_every_function_the_document_names_exists() -> None:
    text = DOC.read_text()
    named = _named_calls(text)
    assert len(named) > 30  # the document walks the paths by function name
    missing = sorted(name for name in named if name not in _definitions())
    assert missing == []


def test_every_file_the_document_names_exists() -> None:
    text = DOC.read_text()
    named = _named_files(text)
    assert named
    missing = []
    for name in named:
        candidates = [REPO / name, PACKAGE / name, REPO / "tests" / name]
        if not any(c.is_file() for c in candidates):
            missing.append(name)
    assert missing == []


def test_the_document_stays_short() -> None:
    assert len(DOC.read_text().splitlines()) <= 160


def test_a_renamed_function_would_be_caught(tmp_path: Path) -> None:
    # The check above reads names, not prose: a name that is not defined is reported.
    assert "ClientProtocol.data_received" in _definitions()
    assert "ClientProtocol.no_such_step" not in _definitions()
    assert _named_calls("then `ClientProtocol.no_such_step()` runs") == {
        "ClientProtocol.no_such_step"
    }
