"""The package's layering (docs/architecture.md): every import of src/aidkd, at module level or inside a function,
goes from a layer to itself or to a lower one, except the few named here, and no group of modules imports itself
round in a circle."""
import ast
from fnmatch import fnmatch
from pathlib import Path

import aidkd

SRC = Path(aidkd.__file__).parent

#: lowest first; a module belongs to the first layer with a pattern that matches its name
LAYERS = [
    ("foundation", ["aidkd.errors", "aidkd.registry", "aidkd.config", "aidkd.progress", "aidkd.plots",
                    "aidkd.files", "aidkd.files.*"]),
    ("runtime", ["aidkd.engine.runtime", "aidkd.engine.precision", "aidkd.engine.distributed",
                 "aidkd.engine.schedule", "aidkd.engine.optim"]),
    ("building blocks", ["aidkd.models", "aidkd.models.*", "aidkd.losses", "aidkd.losses.*", "aidkd.data",
                         "aidkd.data.*"]),
    ("teachers", ["aidkd.teachers", "aidkd.teachers.*"]),
    ("methods", ["aidkd.methods", "aidkd.methods.*", "aidkd.aid.split", "aidkd.aid.project",
                 "aidkd.aid.objective", "aidkd.aid.analysis"]),
    ("engine", ["aidkd.engine", "aidkd.engine.*"]),
    ("stages", ["aidkd.stages", "aidkd.stages.*"]),
    ("plans", ["aidkd.aid", "aidkd.aid.adapt", "aidkd.aid.checkpoint_analysis", "aidkd.aid.pipeline", "aidkd.aid.pipeline.*",
               "aidkd.takd", "aidkd.bench", "aidkd.bench.suites", "aidkd.bench.throughput", "aidkd.demo",
               "aidkd.export", "aidkd.runs_report", "aidkd.checkpoint_eval"]),
    ("commands", ["aidkd", "aidkd.cli", "aidkd.aid.cli", "aidkd.bench.cli"]),
]
#: the imports allowed to go up, each with its reason
UPWARD = {
    # the lazy re-exports of the package's top: ``aidkd.train`` etc. are loaded when first asked for
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The package's modules ``name`` imports (every import statement, in functions too)."""
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _layer(name: str) -> int:
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch(name, p) for p in patterns):
            return i
    raise AssertionError(f"module {name} is in no layer of docs/architecture.md")


def test_imports_go_down_the_layers_and_round_no_circle():
    modules = _modules()
    graph = {m: _imports(m, f, modules) for m, f in modules.items()}
    upward = sorted((a, b) for a, deps in graph.items() for b in deps if _layer(b) > _layer(a))
    assert [e for e in upward if e not in UPWARD] == []
    # no cycle: a depth-first search finds no edge back into the current path (package re-exports of their own
    # children excepted: ``aidkd.x`` importing ``aidkd.x.y`` that imports a sibling through ``aidkd.x``)
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1 and not (d.startswith(m + ".") or m.startswith(d + ".")):
                raise AssertionError(f"import cycle: {' -> '.join(path[path.index(d):] + [d])}")
            if d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_every_module_imports_first():
    """Each module imported first, in an interpreter where no other module of the package is loaded yet, loads: no
    import order meets a half-initialised module (the package's modules are dropped from ``sys.modules`` between
    two imports, so each one runs the import chain as a fresh process would, without paying for torch again)."""
    import importlib
    import sys

    saved = {k: v for k, v in sys.modules.items() if k == "aidkd" or k.startswith("aidkd.")}
    failed = []
    try:
        for name in sorted(_modules()):
            for k in [k for k in sys.modules if k == "aidkd" or k.startswith("aidkd.")]:
                del sys.modules[k]
            try:
                importlib.import_module(name)
            except ImportError as e:
                failed.append(f"{name}: {e}")
    finally:
        for k in [k for k in sys.modules if k == "aidkd" or k.startswith("aidkd.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    assert failed == []
