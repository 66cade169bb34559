"""Reads a package's imports from its source and holds them against a declared layer order.

Three rules, each reported with both modules named:

- **Layers.** Every top-level piece of the package (a subpackage, or a module such as
  ``errors``) has a place in the order, lowest first. A module imports only from its own
  piece or from pieces below it. Type-only imports (under ``if TYPE_CHECKING:``) count
  too: an upward type is still an upward dependency, and a ``Protocol`` replaces it.
- **Faces.** From outside a subpackage, only its ``__init__`` is imported, never one of
  its private ``_modules``.
- **No cycles at run time.** Imports that run (at module level or inside a function)
  between modules never close a loop. Type-only imports are left out of this one, since
  they never execute.

Nothing is imported or executed: the source is parsed with ``ast``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    runtime: bool


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under ``root`` (the package's own folder), by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package, *parts))] = path
    return modules


def _is_type_checking_guard(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk_imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Each import statement with whether it runs (False under ``if TYPE_CHECKING:``)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, runtime: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, runtime))
            elif isinstance(child, ast.If) and _is_type_checking_guard(child):
                for stmt in child.body:
                    visit_stmt(stmt, False)
                for stmt in child.orelse:
                    visit_stmt(stmt, runtime)
            else:
                visit(child, runtime)

    def visit_stmt(stmt: ast.stmt, runtime: bool) -> None:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            found.append((stmt, runtime))
        else:
            visit(stmt, runtime)

    visit(tree, True)
    return found


def _resolve_relative(importer: str, is_init: bool, level: int, module: str | None) -> str:
    base = importer.split(".")
    if not is_init:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def read_edges(root: Path, package: str) -> list[Edge]:
    """The imports between modules of the package, one edge per imported module."""
    modules = module_names(root, package)
    edges = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, runtime in _walk_imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = (
                    _resolve_relative(name, path.name == "__init__.py", node.level, node.module)
                    if node.level
                    else node.module or ""
                )
                # ``from pkg import mod`` imports the module; ``from pkg import name`` the face.
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in modules else base)
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.append(Edge(name, target, node.lineno, runtime))
    return edges


def _piece(module: str, package: str) -> str:
    """The top-level piece a module belongs to: ``pkg.routing._router`` -> ``routing``;
    the package's own ``__init__`` is the piece ``""``."""
    rest = module[len(package) + 1 :] if module != package else ""
    return rest.split(".")[0]


def _is_private_of_other_piece(edge: Edge, package: str) -> bool:
    parts = edge.imported.split(".")
    if len(parts) < 3:
        return False
    behind_face = any(part.startswith("_") for part in parts[2:])
    return behind_face and _piece(edge.importer, package) != _piece(edge.imported, package)


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        if edge.runtime:
            graph.setdefault(edge.importer, set()).add(edge.imported)
            graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def check(root: Path, package: str, layers: list[str]) -> list[str]:
    """Every breach of the three rules, as sentences naming both modules; [] when clean.

    ``layers`` lists the package's top-level pieces lowest first; the package's own
    ``__init__`` is always the lowest."""
    edges = read_edges(root, package)
    rank = {piece: i for i, piece in enumerate(["", *layers])}
    problems = []
    for module in module_names(root, package):
        if _piece(module, package) not in rank:
            problems.append(f"{module} belongs to no declared layer")
    for edge in edges:
        low_piece, high_piece = _piece(edge.importer, package), _piece(edge.imported, package)
        if low_piece in rank and high_piece in rank and rank[high_piece] > rank[low_piece]:
            problems.append(
                f"{edge.importer} (line {edge.line}) imports {edge.imported}: "
                f"layer {low_piece!r} may not import from {high_piece!r}, which is above it"
            )
        if _is_private_of_other_piece(edge, package):
            problems.append(
                f"{edge.importer} (line {edge.line}) imports {edge.imported}: "
                f"a private module behind the face of {package}.{high_piece}"
            )
    for component in _cycles(edges):
        ties = [
            f"{e.importer} -> {e.imported} (line {e.line})"
            for e in edges
            if e.runtime and e.importer in component and e.imported in component
        ]
        problems.append(f"import cycle at run time: {', '.join(sorted(set(ties)))}")
    return problems
