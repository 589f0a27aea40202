"""Static check of the candidate contract, before any code runs.

The check is a courtesy, not the security boundary (the sandbox is): it turns the common ways a
proposal is broken into a rejection that names the rule and the line, so that a person or the
repair prompt can fix it without running anything.
"""

from __future__ import annotations

import ast
import gc
import threading
from dataclasses import dataclass, field
from typing import Any

from agentarch.tasks import recipes
from agentarch.tasks.recipes import RecipeBounds

MAX_CODE_BYTES = 64 * 1024

MAX_AST_DEPTH = 200
"""Deeper syntax trees are refused: no network definition needs them, and the recursive passes that
read a tree (AST dedup, the static rules) would exhaust Python's recursion limit on a hostile one."""

ALLOWED_IMPORT_ROOTS = frozenset(
    {"torch", "math", "functools", "itertools", "typing", "dataclasses", "collections", "einops", "__future__"}
)

# Builtins that reach outside the program (files, the import system, dynamic code) have no place
# in an architecture definition.
FORBIDDEN_CALLS = frozenset({"eval", "exec", "compile", "__import__", "open", "input", "breakpoint", "globals", "vars"})

# Training knobs a candidate may set in HPARAMS, with inclusive bounds.
HPARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "lr": (1e-5, 0.1),
    "weight_decay": (0.0, 0.5),
    "batch_size": (8, 1024),
    "epochs": (1, 200),
    "label_smoothing": (0.0, 0.3),
    "warmup_frac": (0.0, 0.5),
}
INTEGER_HPARAMS = frozenset({"batch_size", "epochs"})


@dataclass(frozen=True)
class Rejection:
    """One broken rule: `rule` is a stable identifier, `line` is 1-based (None for whole-file rules)."""

    rule: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"[{self.rule}] {where}{self.message}"


@dataclass
class CheckResult:
    rejections: list[Rejection] = field(default_factory=list)
    hparams: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)  # the declared RECIPE, canonical ({}: the task's default)

    @property
    def ok(self) -> bool:
        return not self.rejections

    @property
    def reason(self) -> str | None:
        return "; ".join(str(r) for r in self.rejections) or None


def _check_imports(tree: ast.Module) -> list[Rejection]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.append(Rejection("import-allowlist", "relative imports are not allowed", node.lineno))
                continue
            modules = [node.module or ""]
        else:
            continue
        for module in modules:
            if module.split(".")[0] not in ALLOWED_IMPORT_ROOTS:
                allowed = ", ".join(sorted(ALLOWED_IMPORT_ROOTS - {"__future__"}))
                found.append(
                    Rejection(
                        "import-allowlist", f"import of '{module}' is not allowed (allowed: {allowed})", node.lineno
                    )
                )
    return found


def _check_calls(tree: ast.Module) -> list[Rejection]:
    return [
        Rejection("forbidden-call", f"call to '{node.func.id}' is not allowed in a candidate", node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS
    ]


def _methods(cls: ast.ClassDef) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}


def _check_net(tree: ast.Module, inputs: tuple[str, ...] = ("x",)) -> list[Rejection]:
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    net = classes.get("Net")
    if net is None:
        return [Rejection("contract-net", "no module-level class 'Net' (expected `class Net(nn.Module)`)")]
    if not net.bases:
        return [Rejection("contract-net", "class Net must subclass nn.Module", net.lineno)]
    found = []
    # forward and __init__ may come from a base class defined in the same file.
    lineage = [net] + [classes[b.id] for b in net.bases if isinstance(b, ast.Name) and b.id in classes]
    methods: dict[str, ast.FunctionDef] = {}
    for cls in reversed(lineage):
        methods.update(_methods(cls))
    init = methods.get("__init__")
    if init is None:
        found.append(Rejection("contract-init", "Net has no __init__(self, in_shape, num_classes)", net.lineno))
    else:
        args = [a.arg for a in init.args.posonlyargs + init.args.args]
        required = len(args) - len(init.args.defaults)
        if args[1:3] != ["in_shape", "num_classes"] or required > 3:
            found.append(
                Rejection(
                    "contract-init",
                    f"Net.__init__ must take (self, in_shape, num_classes); it takes ({', '.join(args)})",
                    init.lineno,
                )
            )
    forward = methods.get("forward")
    # A torch container base (nn.Sequential, nn.ModuleList...) brings its own forward; nn.Module does not.
    external = [b for b in net.bases if not (isinstance(b, ast.Name) and b.id in classes)]
    inherits_forward = any(
        (b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "")) != "Module" for b in external
    )
    signature = ", ".join(("self", *inputs))
    if forward is None and not inherits_forward:
        found.append(Rejection("contract-forward", f"Net has no forward({signature}) method", net.lineno))
    elif forward is not None and len(forward.args.args) - len(forward.args.defaults) != 1 + len(inputs):
        many = "exactly one input" if len(inputs) == 1 else f"exactly {len(inputs)} inputs"
        found.append(Rejection("contract-forward", f"Net.forward must take {many} ({signature})", forward.lineno))
    return found


def _check_hparams(tree: ast.Module) -> tuple[list[Rejection], dict[str, Any]]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "HPARAMS" for t in node.targets):
            break
    else:
        return [], {}
    try:
        value = ast.literal_eval(node.value)
    except ValueError:
        return [Rejection("hparams", "HPARAMS must be a literal dict of numbers", node.lineno)], {}
    if not isinstance(value, dict):
        return [Rejection("hparams", "HPARAMS must be a dict", node.lineno)], {}
    found = []
    for key, val in value.items():
        if key not in HPARAM_BOUNDS:
            found.append(
                Rejection("hparams", f"unknown HPARAMS key {key!r} (known: {', '.join(HPARAM_BOUNDS)})", node.lineno)
            )
            continue
        low, high = HPARAM_BOUNDS[key]
        if (
            isinstance(val, bool)
            or not isinstance(val, (int, float))
            or (key in INTEGER_HPARAMS and not isinstance(val, int))
        ):
            kind = "an integer" if key in INTEGER_HPARAMS else "a number"
            found.append(Rejection("hparams", f"HPARAMS[{key!r}] must be {kind}, got {val!r}", node.lineno))
        elif not low <= val <= high:
            found.append(Rejection("hparams", f"HPARAMS[{key!r}]={val} is outside [{low}, {high}]", node.lineno))
    return found, ({} if found else value)


def _module_assignment(tree: ast.Module, name: str) -> ast.Assign | None:
    """The module-level `NAME = ...` statement (the last one, which is the one Python keeps), if any."""
    found = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            found = node
    return found


def _check_recipe(
    tree: ast.Module, code: str, bounds: RecipeBounds | None, kind: str | None, hparams: dict[str, Any]
) -> tuple[list[Rejection], dict[str, Any]]:
    """The candidate's training recipe (`RECIPE = {...}`), read without running anything: a literal of at most
    MAX_RECIPE_CHARS characters, inside the task's bounds, and no knob set twice (once in HPARAMS)."""
    node = _module_assignment(tree, "RECIPE")
    if node is None:
        return [], {}
    source = ast.get_source_segment(code, node.value) or ""
    if len(source) > recipes.MAX_RECIPE_CHARS:
        message = f"RECIPE is {len(source)} characters; a recipe is a few keys (at most {recipes.MAX_RECIPE_CHARS})"
        return [Rejection("recipe", message, node.lineno)], {}
    try:
        value = ast.literal_eval(node.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return [
            Rejection("recipe", "RECIPE must be a literal dict (strings, numbers, a list of names)", node.lineno)
        ], {}
    if bounds is None:
        return [Rejection("recipe", "this task takes no training recipe; remove RECIPE", node.lineno)], {}
    recipe, problems = recipes.check(value, bounds, kind or "")
    twice = sorted(set(recipe) & set(hparams))
    if twice:
        problems.append(f"{', '.join(twice)} set in both HPARAMS and RECIPE; keep them in RECIPE only")
    return [Rejection("recipe", problem, node.lineno) for problem in problems], ({} if problems else recipe)


def declared_recipe(code: str, bounds: RecipeBounds, kind: str) -> dict[str, Any]:
    """The RECIPE of code that passed `check` with these bounds, canonical ({}: none declared)."""
    tree = parse(code)
    assert isinstance(tree, ast.Module)
    return _check_recipe(tree, code, bounds, kind, {})[1]


_PARSE_LOCK = threading.Lock()


def parse(code: str, mode: str = "exec") -> ast.AST:
    """`ast.parse`, one thread at a time and with the garbage collector paused.

    CPython 3.11 keeps the AST conversion's recursion depth in state the whole interpreter shares, so a
    second conversion that starts while one is under way breaks the first with "SystemError: AST
    constructor recursion depth mismatch". Two ways in: another thread's parse (the agent loop's
    parallel branches), and a collection that the conversion's own allocations set off, whose
    finalizers parse (3.11's traceback formatting parses source to place its carets) or yield the GIL
    to a thread that does. The lock shuts the first; pausing the collector shuts the second, and
    without finalizers this thread never yields mid-conversion. Every orchestrator-side parse goes
    through here.
    """
    with _PARSE_LOCK:
        collecting = gc.isenabled()
        gc.disable()
        try:
            return ast.parse(code, mode=mode)
        finally:
            if collecting:
                gc.enable()


def _depth(tree: ast.AST) -> int:
    """How deep the syntax tree nests, found without recursion (so any depth can be measured)."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(node))
    return deepest


FORWARD_INPUTS = {"graph": ("x", "edge_index"), "graphs": ("x", "edge_index", "batch")}
"""What `forward` takes besides self, by task kind where it is not one batch `x`."""


def check(code: str, kind: str | None = None, recipe: RecipeBounds | None = None) -> CheckResult:
    """Check a candidate's source against the contract; never executes it. A graph task's (`kind`) network takes the
    graph, `forward(self, x, edge_index)`; a graphs task's a batch of graphs, `forward(self, x, edge_index, batch)`;
    every other kind's one batch, `forward(self, x)`. `recipe`: the task's bounds on a declared RECIPE (None: the
    code may declare none)."""
    size = len(code.encode("utf-8"))
    if size > MAX_CODE_BYTES:
        return CheckResult([Rejection("size", f"candidate is {size} bytes; the limit is {MAX_CODE_BYTES}")])
    try:
        tree = parse(code)
    except (SyntaxError, RecursionError, MemoryError) as err:  # the parser's own nesting limits
        return CheckResult(
            [
                Rejection(
                    "syntax", getattr(err, "msg", None) or "nested too deeply to parse", getattr(err, "lineno", None)
                )
            ]
        )
    depth = _depth(tree)
    if depth > MAX_AST_DEPTH:
        return CheckResult([Rejection("depth", f"the code nests {depth} levels deep; the limit is {MAX_AST_DEPTH}")])
    rejections = _check_imports(tree) + _check_calls(tree) + _check_net(tree, FORWARD_INPUTS.get(kind or "", ("x",)))
    hparam_rejections, hparams = _check_hparams(tree)
    recipe_rejections, declared = _check_recipe(tree, code, recipe, kind, hparams)
    return CheckResult(rejections + hparam_rejections + recipe_rejections, hparams, declared)
