"""The layers of docs/design.md section 2, read off the source: every import of every module
(top level and inside functions) runs downwards, and the import graph has no cycle.

    core  <  io, plots  <  analyses  <  cli          (nothing imports cli.app)

Importing `a.b.c` also runs the packages `a.b` and `a` (their __init__.py), so those count as
imported too: a package whose __init__ imports its own submodules, which import a sibling, is a
cycle that Python survives only by handing out half-initialised modules.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bptt_cli"
RANK = {"core": 0, "io": 1, "plots": 1, "analyses": 2, "cli": 3}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every bptt_cli module `path` imports, with the packages that importing it runs."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bptt_cli"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import submodule`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bptt_cli"))
    out = set()
    for name in found:
        parts = name.split(".")
        out.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return out


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {m: {i for i in imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else None


def test_the_package_has_all_its_layers():
    assert {layer(m) for m in MODULES} >= set(RANK)
    assert "bptt_cli.cli.app" in MODULES and "bptt_cli.core.verdict" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_run_downwards(module):
    me = layer(module)
    for other in GRAPH[module]:
        them = layer(other)
        if me is None or them is None or them == me:
            continue
        assert RANK[them] <= RANK[me], f"{module} imports {other}: {them} is above {me}"


def test_nothing_imports_the_app():
    entry = ("bptt_cli.__main__", "bptt_cli.entry")  # the console script runs the app
    importers = [m for m, deps in GRAPH.items() if "bptt_cli.cli.app" in deps and m not in entry]
    assert importers == []


def test_analyses_never_import_the_cli_and_core_imports_no_other_layer():
    for module, deps in GRAPH.items():
        if layer(module) == "core":
            assert {layer(d) for d in deps} <= {"core", None}, module
        if layer(module) == "analyses":
            assert "cli" not in {layer(d) for d in deps}, module


def test_no_import_cycles():
    """Depth-first search over the whole graph; a back edge is a cycle, reported with its path."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d) :] + [d]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


def test_the_checker_sees_a_cycle_and_an_upward_import():
    """The checks above can fail: a made-up graph with a cycle and an upward import trips them."""
    fake = {"bptt_cli.core.a": {"bptt_cli.cli.x"}, "bptt_cli.cli.x": {"bptt_cli.core.a"}}
    globals_before = dict(GRAPH)
    GRAPH.clear()
    GRAPH.update(fake)
    try:
        with pytest.raises(AssertionError, match="import cycle"):
            test_no_import_cycles()
        with pytest.raises(AssertionError, match="above"):
            test_imports_run_downwards("bptt_cli.core.a")
    finally:
        GRAPH.clear()
        GRAPH.update(globals_before)
