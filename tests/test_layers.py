"""The package's layering stays true: no import circle, and no arrow from a lower layer back up.

docs/architecture.md draws the layers; this test reads every `import` in agentarch/ (at module level,
inside functions, and under `TYPE_CHECKING` alike: a lazy import is still a dependency) and fails on a
module that imports a higher layer, or on modules that import each other round a circle. The runner
(`sandbox/`, installed as `agentarch.runner`) imports nothing of the orchestrator at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "agentarch"

LAYERS: list[set[str]] = [
    {"errors", "formats", "config"},
    {"isolation", "tasks", "store"},
    {"evaluation", "search", "llm"},
    {"loop"},
    {"cli", "web"},
]
"""Bottom to top. A module may import its own layer's packages and any layer below, never one above."""

MAX_LINES = 600
LONG_BY_DESIGN: dict[str, str] = {}
"""Modules over MAX_LINES, each with the reason it reads best whole (docs/architecture.md says the same)."""


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The agentarch modules `path` imports: `from P import m` is an arrow to the submodule P.m when there is
    one, else to P itself (P's __init__ runs for it)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source)
    return {m for m in found if m.startswith("agentarch") and m in MODULES}


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imported(path) - {name} for name, path in MODULES.items()}


def room(module: str) -> str | None:
    """The top-level room a module lives in (`store` for agentarch.store.archive), None for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def layer(module: str) -> int:
    top = room(module)
    for level, rooms in enumerate(LAYERS):
        if top in rooms:
            return level
    raise AssertionError(f"{module} is in no layer: add its room to LAYERS here and to docs/architecture.md")


def test_every_room_has_a_layer_and_a_docstring_that_says_its_job():
    for name, path in MODULES.items():
        if name == "agentarch":
            continue
        layer(name)
        if path.name == "__init__.py" and name.count(".") == 1:
            doc = ast.get_docstring(ast.parse(path.read_text()))
            assert doc and "May import" in doc, f"{name} needs a docstring saying its job and what it may import"


def test_no_arrow_points_up():
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in GRAPH.items()
        if module != "agentarch"
        for target in targets
        if target != "agentarch" and layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    """Tarjan's strongly connected components over the module graph: any component of two or more is a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(start: str) -> None:
        work = [(start, iter(sorted(GRAPH[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(GRAPH[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_runner_imports_nothing_of_the_orchestrator():
    for path in sorted((REPO / "sandbox").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            assert not any(n.startswith("agentarch") for n in names), f"{path.name} imports {names}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_one_job_long(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES or name in LONG_BY_DESIGN, (
        f"{name} has {lines} lines: split it by job, or name it in LONG_BY_DESIGN with the reason it reads best whole"
    )


def test_the_top_level_is_a_dozen_rooms_at_most():
    entries = [p.name for p in PACKAGE.iterdir() if p.name not in {"__init__.py", "py.typed", "__pycache__"}]
    assert len(entries) <= 12, sorted(entries)
    for entry in entries:
        assert entry.endswith(".py") or (PACKAGE / entry / "__init__.py").exists(), f"{entry} is not a package"


def test_every_package_ships_in_the_wheel():
    """pyproject.toml lists packages by name (the runner, prompts and seeds install from other folders), so a new
    sub-package left off the list would be missing from the wheel while every test in a checkout passes."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert packages <= listed, f"add to pyproject.toml's packages: {sorted(packages - listed)}"
