"""The import graph is the architecture's specification (docs/architecture.md).

Every module of the project is parsed with `ast` (imports inside functions included, so a lazy
import cannot hide a dependency) and two rules are checked:

1. **Layers.** A package imports only packages of its own layer or the layers below it:

       backend       the API and `remix studio` (sends jobs by task name through the broker)
       worker        Celery tasks: claims jobs, runs the engine, writes its events to SQL
       studio        shared: settings, SQL schema + migrations, db sessions, broker app,
                     job/run state machine, leaderboard store
       remix_engine  the science: no web, SQL or Celery

   and `backend` never imports `worker` (the API talks to workers only through the broker;
   importing worker code would also pull torch into the API process).
2. **No cycles** between modules, anywhere.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Top to bottom: a package may import the ones at its index or after.
LAYERS = ["backend", "worker", "studio", "remix_engine"]
FORBIDDEN = {("backend", "worker"): "the API enqueues by task name (studio.broker.TASK_NAMES)"}


def project_modules() -> dict[str, Path]:
    """module name -> file, for every .py file of the layered packages."""
    out = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The project module that `name` (a module or a module.attribute) lives in."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import sub` names a submodule when there is one, else an attribute of pkg
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                owner = _owner(target, modules)
                if owner is not None and owner != name:
                    graph[name].add(owner)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_imports():
    # remix_engine.cli imports the trainer inside a function only
    assert "remix_engine.trainer" in import_graph()["remix_engine.cli"]


def test_no_upward_imports_between_layers():
    rank = {package: i for i, package in enumerate(LAYERS)}
    bad = []
    for src, targets in import_graph().items():
        for dst in targets:
            a, b = src.split(".")[0], dst.split(".")[0]
            if rank[b] < rank[a]:
                bad.append(f"{src} -> {dst} ({b} is above {a})")
            elif (a, b) in FORBIDDEN:
                bad.append(f"{src} -> {dst}: {FORBIDDEN[(a, b)]}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    cycles = _cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_api_process_never_imports_torch(tmp_path):
    # The API imports the engine's light modules only (config, benchmarks, the evaluation options
    # it validates); torch and transformers load in workers. A fresh interpreter shows what loads.
    import subprocess
    import sys

    code = ("import sys; from backend.app import create_app; from studio.settings import Settings; "
            f"create_app(Settings(data_dir={str(tmp_path)!r})); import remix_engine.evaluate; "
            "print(sorted(m for m in ('torch', 'transformers', 'worker') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
