"""The package's layering, read from its source: who may import whom (issue 13). Every ``import`` statement counts,
function-level (lazy) ones included."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import occfeat

PACKAGE = Path(occfeat.__file__).parent
# Lower layers never import higher ones: conventions < synthetic < data, models < engine < zoo < runs < pretrain,
# finetune < demo, cli.
ABOVE_DATA = {"models", "engine", "zoo", "runs", "pretrain", "finetune", "demo", "cli"}
FORBIDDEN = {
    "conventions": {"synthetic", "data", *ABOVE_DATA},
    "synthetic": {"data", *ABOVE_DATA},
    "data": ABOVE_DATA,
    "models": {"data", "synthetic", "engine", "zoo", "runs", "pretrain", "finetune", "demo", "cli"},
    "engine": {"data", "synthetic", "models", "zoo", "runs", "pretrain", "finetune", "demo", "cli"},
    "zoo": {"runs", "pretrain", "finetune", "demo", "cli"},
    "runs": {"pretrain", "finetune", "demo", "cli"},
    "pretrain": {"finetune", "demo", "cli"},
    "finetune": {"pretrain", "demo", "cli"},
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "occfeat"


def import_graph() -> dict[str, set[str]]:
    """{subpackage or top-level module: the others it imports}."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = ("occfeat", *path.relative_to(PACKAGE).with_suffix("").parts)
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    names.append(".".join(base + ([node.module] if node.module else [])))
                else:
                    names.append(node.module or "")
            elif isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            for name in names:
                if name.startswith("occfeat") and _unit(name) != _unit(module):
                    edges[_unit(module)].add(_unit(name))
    return edges


def test_no_layer_imports_a_layer_above_it():
    graph = import_graph()
    wrong = {unit: sorted(graph[unit] & above) for unit, above in FORBIDDEN.items() if graph[unit] & above}
    assert not wrong, f"imports against the layering: {wrong}"
    assert graph["data"] <= {"conventions", "synthetic", "errors", "io"} and graph["conventions"] <= {"errors", "io"}


def test_the_subpackage_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in graph.get(node, ()):
            if target == "occfeat":  # the lazy top-level API (__version__, load): not a layer
                continue
            assert state.get(target) != 1, f"import cycle: {' -> '.join([*path, node, target])}"
            if target not in state:
                visit(target, [*path, node])
        state[node] = 2

    for node in list(graph):
        if node not in state:
            visit(node, [])


def test_importing_the_data_layer_does_not_import_timm_or_the_networks():
    code = ("import sys, occfeat.data, occfeat.conventions; "
            "print(sorted(m for m in sys.modules if m == 'timm' or m.startswith(('occfeat.models', 'occfeat.zoo'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
