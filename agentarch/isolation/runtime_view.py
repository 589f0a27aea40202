"""The minimal read-only view of the runtime a candidate gets: what torch, numpy and einops need.

Mounting the whole Python environment into the sandbox put every installed package in reach,
scikit-learn's bundled copy of the digits data set (labels included) among them, and a candidate
that looked its inputs up there scored 1.0. So the view is built from what the runner needs, not
from what is installed:

- the system libraries (/usr, /lib, ...) and a few files of /etc the dynamic loader reads;
- the interpreter, its shared library and the standard library;
- the installed files of torch, numpy, einops and safetensors and of everything they require, transitively
  (importlib.metadata), and nothing else from any site-packages or dist-packages directory.

Every Python package directory on the machine is a hole in the view. bubblewrap binds each root
read-only, covers each hole under it with an empty read-only tmpfs and binds the packages into it
(a few dozen mounts); Landlock has no holes, only rules that allow, so for the process mode a
tree that contains a hole is replaced by its other children, recursively (`RuntimeView.paths`).
Task data never enters the view: the host mounts only the task's inputs (no labels). The graph worker
(agentarch/evaluation/graphs/worker.py) gets a view built the same way from ONNX Runtime and numpy, without torch.
"""

from __future__ import annotations

import re
import site
import sys
import sysconfig
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import metadata
from pathlib import Path

RUNTIME_PACKAGES = ("torch", "numpy", "einops", "safetensors")
"""What candidate code and the runner import beyond the standard library (the candidate contract; safetensors: the
runner's training checkpoints, sandbox/checkpoint.py)."""

SYSTEM_ROOTS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "localtime")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*")


def _requirement_names(dist: metadata.Distribution) -> list[str]:
    """Names a distribution requires, leaving out optional extras (`extra == ...` markers)."""
    names = []
    for line in dist.requires or []:
        if "extra ==" in line.replace("extra==", "extra =="):
            continue
        match = _NAME.match(line.strip())
        if match:
            names.append(match.group(0))
    return names


def package_closure(roots: tuple[str, ...] = RUNTIME_PACKAGES) -> list[metadata.Distribution]:
    """The installed distributions `roots` need, transitively (missing ones, like einops, skipped)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        todo += _requirement_names(dist)
    return list(seen.values())


def _package_paths(dist: metadata.Distribution) -> set[Path]:
    """The top-level files and directories a distribution installed into its site directory."""
    base = Path(dist.locate_file("")).resolve()
    found: set[Path] = set()
    for file in dist.files or []:
        parts = Path(file).parts
        if not parts or parts[0] in ("..", "__pycache__") or parts[0].endswith(".pth"):
            continue
        found.add(base / parts[0])
    return {p for p in found if p.exists()}


def package_holes() -> set[Path]:
    """Every directory on this machine that Python may import packages from, besides the stdlib."""
    holes = {Path(p) for p in site.getsitepackages()}
    holes |= {Path(p) for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))}
    for pattern in (
        "/usr/lib/python3*/*-packages",
        "/usr/local/lib/python3*/*-packages",
        "/usr/lib/python3/dist-packages",
        "/usr/share/python3*",
        "/usr/share/pyshared",
    ):
        holes |= set(Path("/").glob(pattern.lstrip("/")))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    holes.add(stdlib / "site-packages")
    return {h.resolve() for h in holes if h.exists()}


def _without_holes(path: Path, holes: set[Path]) -> list[Path]:
    """`path` itself, or, when a hole lies under it, its other children (recursively)."""
    if path in holes:
        return []
    if not path.is_dir() or path.is_symlink() or not any(h.is_relative_to(path) for h in holes):
        return [path]
    kept: list[Path] = []
    for child in sorted(path.iterdir()):
        kept += _without_holes(child, holes)
    return kept


def _interpreter_paths() -> set[Path]:
    """The interpreter (the venv's link and what it points at), its shared library and pyvenv.cfg."""
    exe = Path(sys.executable)
    found = {exe.resolve()}
    link = exe
    while link.is_symlink():  # each hop of a venv's python -> python3 -> /base/bin/python3.11
        found.add(link)
        link = link.parent / link.readlink()
    found.add(link)
    found.add(Path(sys.prefix) / "pyvenv.cfg")
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        found |= set(Path(libdir).glob("libpython3*.so*"))
    return {p for p in found if p.exists() or p.is_symlink()}


@dataclass(frozen=True)
class RuntimeView:
    """What a candidate may read: `roots` less the `holes` under them, plus the `packages` in the holes."""

    roots: tuple[Path, ...]
    holes: tuple[Path, ...]
    packages: tuple[Path, ...]
    import_paths: tuple[Path, ...]  # the site directories the packages live in, put on the runner's sys.path

    @cached_property
    def paths(self) -> tuple[Path, ...]:
        """The same view as a flat list of readable paths with no hole under any (Landlock's form).

        Walking the system trees around the holes reads hundreds of directories: once per process.
        """
        holes = set(self.holes)
        flat = {kept for root in self.roots for kept in _without_holes(root, holes)}
        return tuple(sorted(flat | set(self.packages)))


@cache
def runtime_view(packages: tuple[str, ...] = RUNTIME_PACKAGES) -> RuntimeView:
    """The runtime view of this interpreter's environment for `packages` (computed once per process and set):
    the runner's by default; the graph worker's holds ONNX Runtime and numpy, and no torch."""
    holes = package_holes()
    roots: set[Path] = set()
    stdlib = {Path(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib")}
    for root in [*map(Path, SYSTEM_ROOTS), *stdlib]:
        if root.exists() and not root.is_symlink() and root.resolve() not in holes:
            roots.add(root.resolve())
    roots |= {Path("/etc") / name for name in ETC_FILES if (Path("/etc") / name).exists()}
    roots |= _interpreter_paths()
    closure = package_closure(packages)
    packages = {path for dist in closure for path in _package_paths(dist)}
    covered = {hole for hole in holes if any(hole.is_relative_to(root) and hole != root for root in roots)}
    # In order of sys.path, so the runner imports the same copies the host would.
    sites = {Path(dist.locate_file("")).resolve() for dist in closure}
    ordered = [Path(p).resolve() for p in sys.path if p and Path(p).resolve() in sites]
    imports = list(dict.fromkeys(ordered)) + sorted(sites - set(ordered))
    return RuntimeView(tuple(sorted(roots)), tuple(sorted(covered)), tuple(sorted(packages)), tuple(imports))


def symlinked_roots() -> dict[str, str]:
    """System roots that are symlinks (/lib -> usr/lib on merged-/usr systems), to recreate as links."""
    return {root: str(Path(root).readlink()) for root in SYSTEM_ROOTS if Path(root).is_symlink()}
