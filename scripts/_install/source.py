"""What of the checkout goes into an install, and a fingerprint of it.

pip builds a local directory in place (setuptools writes ``build/`` and ``*.egg-info`` next
to the sources), so an install builds from a private copy: the checkout may be read-only, or
belong to another user than the one installing (``sudo`` on a user's clone).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
# Everything setuptools reads to build the wheel: the metadata, the readme it embeds, the package.
BUILD_INPUTS = ("pyproject.toml", "README.md", "proxyd")
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _files(checkout: Path) -> Iterator[Path]:
    for name in BUILD_INPUTS:
        top = checkout / name
        if top.is_file():
            yield top
            continue
        for path in sorted(top.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path


def fingerprint(checkout: Path) -> str:
    """Changes exactly when a rebuild from ``checkout`` would install something different."""
    digest = hashlib.sha256()
    for path in _files(checkout):
        digest.update(str(path.relative_to(checkout)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def copy_build_inputs(checkout: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in BUILD_INPUTS:
        src = checkout / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=SKIPPED)
        else:
            shutil.copy(src, dest / name)
    return dest
