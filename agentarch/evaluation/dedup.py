"""Duplicate detection for candidate code at two static levels.

The third level, the functional hash, needs to execute the candidate, so the sandbox runner
computes it (see sandbox/runner.py) and the archive compares it like the two below.

- whitespace: the NNGPT/LEMUR idea, made safe for Python. Runs of spaces inside a line collapse
  and blank lines vanish, but the width of each line's indentation stays, because in Python
  indentation is structure.
- ast: a canonical dump of the syntax tree. Comments, docstrings, type annotations, formatting,
  import aliases and the names the program itself binds (locals, arguments, helper classes,
  attributes it assigns) do not matter; the structure and the library calls do.
"""

from __future__ import annotations

import ast
import hashlib
import re

from agentarch.evaluation.checks import parse

_INNER_SPACE = re.compile(r"[ \t]+")

# Names whose meaning comes from outside the candidate (the contract or torch's nn.Module API):
# renaming them would change what the program does, so they are kept verbatim.
_CONTRACT_NAMES = frozenset({"Net", "HPARAMS", "RECIPE", "forward", "extra_repr", "reset_parameters", "training"})


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def whitespace_hash(code: str) -> str:
    """Hash of the code with blank lines dropped and inner whitespace collapsed, indentation kept."""
    lines = []
    for raw in code.expandtabs(8).splitlines():
        body = raw.strip()
        if not body:
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        lines.append(" " * indent + _INNER_SPACE.sub(" ", body))
    return _sha256("\n".join(lines))


def _import_aliases(tree: ast.Module) -> dict[str, str]:
    """Map each name an import binds to the dotted path it stands for (`F` -> `torch.nn.functional`)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _bound_names(tree: ast.Module) -> tuple[set[str], set[str]]:
    """Names and attribute names that the program itself defines (and so may rename freely)."""
    names: set[str] = set()
    attrs: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        attrs.add(item.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            attrs.add(node.attr)
    keep = {n for n in names | attrs if n in _CONTRACT_NAMES or (n.startswith("__") and n.endswith("__"))}
    return names - keep, attrs - keep


class _Canonicalizer(ast.NodeTransformer):
    """Rewrites a tree into its canonical form; names get numbers in order of first appearance."""

    def __init__(self, tree: ast.Module) -> None:
        self.aliases = _import_aliases(tree)
        self.names, self.attrs = _bound_names(tree)
        self.names -= set(self.aliases)
        self.numbering: dict[str, str] = {}
        self.resolved: set[str] = set(self.aliases.values())

    def _canon(self, name: str) -> str:
        if name not in self.numbering:
            self.numbering[name] = f"_{len(self.numbering)}"
        return self.numbering[name]

    def _strip_docstring(self, body: list[ast.stmt]) -> list[ast.stmt]:
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body = body[1:] or [ast.Pass()]
        return body

    def visit_Module(self, node: ast.Module) -> ast.Module:
        node.body = [s for s in self._strip_docstring(node.body) if not isinstance(s, (ast.Import, ast.ImportFrom))]
        self.generic_visit(node)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        node.body = self._strip_docstring(node.body)
        if node.name in self.names:
            node.name = self._canon(node.name)
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.body = self._strip_docstring(node.body)
        node.returns = None
        if node.name in self.names or node.name in self.attrs:
            node.name = self._canon(node.name)
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        if node.arg in self.names:
            node.arg = self._canon(node.arg)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        if node.value is None:
            return None
        return self.visit(ast.Assign(targets=[node.target], value=node.value))

    def visit_Name(self, node: ast.Name) -> ast.Name:
        if node.id in self.aliases:
            node.id = self.aliases[node.id]
        elif node.id in self.names:
            node.id = self._canon(node.id)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        """A call of the program's own function, class or method names its parameters by the program's names: its
        keywords are renamed with them (`block(c_in=3)` and `conv(cin=3)` are one call). A library call's keywords
        are the library's, and stay (`padding=` and `stride=` differ, whatever the program names its own)."""
        func = node.func
        own = (isinstance(func, ast.Name) and func.id in self.names) or (
            isinstance(func, ast.Attribute) and func.attr in self.attrs
        )
        if own:
            for keyword in node.keywords:
                if keyword.arg is not None and keyword.arg in self.names:
                    keyword.arg = self._canon(keyword.arg)
        self.generic_visit(node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.value, ast.Name) and node.value.id in self.resolved:
            # torch.nn.Conv2d, nn.Conv2d and Conv2d (from torch.nn import Conv2d) all become one name.
            dotted = f"{node.value.id}.{node.attr}"
            self.resolved.add(dotted)
            return ast.Name(id=dotted, ctx=node.ctx)
        if node.attr in self.attrs:
            node.attr = self._canon(node.attr)
        return node


def canonical_ast(code: str) -> str:
    """The canonical dump the AST hash is taken of; raises SyntaxError on code that does not parse."""
    tree = parse(code)
    tree = _Canonicalizer(tree).visit(tree)
    ast.fix_missing_locations(tree)
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def ast_hash(code: str) -> str:
    """Hash of the canonical AST: equal for programs that differ only in names, comments or layout."""
    return _sha256(canonical_ast(code))
