"""The package's layers: imports run down the data flow only, and no module imports itself back.

data -> models -> interpret -> training -> evaluation / experiments -> cli. Every `import` and `from ... import`
counts, including the ones inside functions (a lazy import is still a dependency, and the place cycles hide).
A new top-level module must be given a layer here, so that its place is a decision, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "uimer"

# Lower numbers are lower layers; a module may import its own layer and the ones below.
LAYERS: dict[str, int] = {
    "errors": 0, "checks": 0, "atomic": 0,
    "data": 1,
    "models": 2,
    "interpret": 3,
    "training": 4, "api": 4, "hf": 4,  # the library API and the Hugging Face Trainer, on the training layer
    "evaluation": 5, "experiments": 5,
    "testing": 6,  # helpers for tests of any layer; nothing in the package imports them
    "cli": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def collect_imports() -> dict[str, set[str]]:
    """module -> the uimer modules it imports (`from pkg import mod` counts as importing pkg.mod)."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] == "uimer")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.split(".")[0] != "uimer":
                    continue
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in paths)
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


GRAPH = collect_imports()


def test_every_top_level_module_has_a_layer():
    missing = sorted({m.split(".")[1] for m in GRAPH if "." in m and layer_of(m) is None})
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


def test_no_import_runs_up_the_layers():
    upward = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in sorted(GRAPH.items())
        for target in sorted(targets)
        if layer_of(source) is not None and layer_of(target) is not None and layer_of(target) > layer_of(source)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    """Depth-first search for a back edge; reports one cycle as the path that closes it."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(("source", "target"), [("uimer.interpret.base", "uimer.training.trainer"),
                                                ("uimer.models.mlm", "uimer.training.trainer")])
def test_the_walker_sees_the_edges_it_must_refuse(source, target):
    """The checks above are only as good as the graph: these two modules exist and are walked (the cycles the
    issue removed ran through them), and neither now imports the training loop."""
    assert source in GRAPH and target in GRAPH
    assert target not in GRAPH[source]
