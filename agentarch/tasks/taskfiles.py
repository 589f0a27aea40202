"""Task files: a user's own problem as a TOML file, turned into a `Task` the whole pipeline takes.

    name = "shapes"
    description = "Tell circles, squares and triangles apart in 16x16 grayscale drawings."
    kind = "image"                      # image, token, sequence, table, lm, dense (image restoration), graph or graphs
    metric = "accuracy"                 # optional: accuracy, mse for a table regression, bits_per_byte, psnr
    max_params = 200_000

    [data]
    source = "images"                   # npz, images, csv, parquet, hf or text
    path = "images"                     # relative to this file (a graph from CSV: nodes = "...", edges = "...")

    [input]
    channels = 1                        # images: the declared size (every image is resized to it)
    height = 16
    width = 16                          # sequences and lm: seq_len = 128

    [train]
    epochs = 10
    batch_size = 32
    lr = 0.003
    weight_decay = 0.01

    [splits]                            # only when the source gives no train/val/test split
    val = 0.2
    test = 0.2

`get_task` resolves a path ending in .toml (or any existing file) here, and a name published in the
`agentarch.tasks` entry-point group to the Task its callable returns. Reading a task file reads its
data (the input width of a table and the classes come from it), once per process and data version:
the task's `fingerprint` hashes the file and the data files' sizes and modification times, so
changed data is prepared again under a new cache folder. Every problem is a `TaskError` that names
the file and the key.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentarch.tasks import dense, graphcsv, graphsets, nodes, sources
from agentarch.tasks.builtin import TASKS
from agentarch.tasks.graphsets import GraphSet
from agentarch.tasks.recipes import RecipeBounds
from agentarch.tasks.splits import Dataset, split
from agentarch.tasks.task import BYTE_VOCAB, METRICS, SplitData, Task, TaskError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENTRY_POINT_GROUP = "agentarch.tasks"
TASKS_DIR = Path("tasks")
"""Where `agentarch tasks` looks for task files (relative to the working directory)."""

CLASS_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
REGRESSION_METRICS = ("mse", "mae", "r2")
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "image": CLASS_METRICS,
    "sequence": CLASS_METRICS,
    "table": CLASS_METRICS + REGRESSION_METRICS,
    "token": ("accuracy", "query_accuracy"),
    "lm": ("bits_per_byte",),
    "dense": ("psnr", "ssim"),
    "graph": CLASS_METRICS,
    "graphs": CLASS_METRICS,
}
SOURCE_KINDS: dict[str, tuple[str, ...]] = {
    "npz": ("image", "token", "sequence", "table", "lm", "dense", "graph", "graphs"),
    "images": ("image", "dense"),
    "csv": ("table", "sequence", "graph", "graphs"),
    "parquet": ("table", "sequence"),
    "hf": ("image", "sequence", "table"),
    "text": ("lm",),
}


class _Strict(BaseModel):
    """Unknown keys are errors: a misspelt key silently ignored would train on the wrong setup."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Files(_Strict):
    """Where the data is: one `path` (split by seed, or a folder that names its splits), or train/val/test files."""

    path: str | None = None
    train: str | None = None
    val: str | None = None
    test: str | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> _Files:
        split_files = (self.train, self.val, self.test)
        if getattr(self, "nodes", None) is not None or getattr(self, "edges", None) is not None:
            if not (
                getattr(self, "nodes", None)
                and getattr(self, "edges", None)
                and self.path is None
                and not any(split_files)
            ):
                raise ValueError("a graph from CSV gives nodes and edges files, and no path or train/val/test")
            return self
        if self.path is None and not all(split_files):
            raise ValueError("give path, or train, val and test files")
        if self.path is not None and any(split_files):
            raise ValueError("give path, or train, val and test files, not both")
        return self

    def paths(self) -> list[str]:
        return [self.path] if self.path is not None else [self.train, self.val, self.test]  # type: ignore[list-item]


class NpzSource(_Strict):
    source: Literal["npz"]
    path: str
    regression: bool = False


class ImagesSource(_Strict):
    source: Literal["images"]
    path: str
    degradation: Literal["downscale", "noise"] | None = None  # dense: clean images degraded so (else pairs)
    factor: int | None = Field(None, ge=2, le=8)  # downscale: the side's divisor
    sigma: float | None = Field(None, gt=0, le=1)  # noise: Gaussian std in [0, 1] pixel units


class _Columns(_Strict):
    target: str | list[str]
    features: list[str] | None = None  # default: every column but the target (and the text column)
    categorical: list[str] | None = None  # default: every feature that is not all numbers
    encoding: Literal["onehot", "ordinal"] = "onehot"
    text: str | None = None  # sequence kind: the column whose text becomes byte ids
    regression: bool = False

    @property
    def targets(self) -> list[str]:
        return [self.target] if isinstance(self.target, str) else list(self.target)


class TableSource(_Files, _Columns):
    source: Literal["csv", "parquet"]
    nodes: str | None = None  # a graph from a CSV pair (agentarch.tasks.graphcsv): its nodes file and edges file,
    edges: str | None = None  # in place of path

    def paths(self) -> list[str]:
        return [self.nodes, self.edges] if self.nodes is not None else super().paths()  # type: ignore[list-item]


class HfSource(_Columns):
    source: Literal["hf"]
    path: str
    target: str | list[str] = "label"
    image: str | None = None  # image kind: the column of images


class TextSource(_Files):
    source: Literal["text"]


Source = Annotated[Union[NpzSource, ImagesSource, TableSource, HfSource, TextSource], Field(discriminator="source")]


class InputSize(_Strict):
    channels: Literal[1, 3] | None = None
    height: int | None = Field(None, gt=0, le=4096)
    width: int | None = Field(None, gt=0, le=4096)
    seq_len: int | None = Field(None, gt=0, le=1_000_000)

    @model_validator(mode="after")
    def _whole_image_size(self) -> InputSize:
        given = [v is not None for v in (self.channels, self.height, self.width)]
        if any(given) and not all(given):
            raise ValueError("declare channels, height and width together (or none, when all images share a size)")
        return self

    @property
    def image(self) -> tuple[int, int, int] | None:
        return None if self.channels is None else (self.channels, self.height, self.width)  # type: ignore[return-value]


class Training(_Strict):
    epochs: int = Field(10, gt=0, le=10_000)
    batch_size: int = Field(64, gt=0, le=1_000_000)
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.01, ge=0, le=10)


class Splits(_Strict):
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_training_data(self) -> Splits:
        if self.val + self.test >= 1:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves no training data; keep it below 1")
        return self


class TaskFile(_Strict):
    """The file's keys; see the module docstring for an example."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = Field(min_length=1)
    kind: Literal["image", "token", "sequence", "table", "lm", "dense", "graph", "graphs"]
    metric: str | None = None
    max_params: int = Field(1_000_000, gt=0)
    data: Source
    input: InputSize = InputSize()
    train: Training = Training()
    splits: Splits | None = None
    recipe: RecipeBounds | None = None  # what a candidate's RECIPE may choose (tasks/recipes.py)

    @property
    def regression(self) -> bool:
        return bool(getattr(self.data, "regression", False))


# -- reading and checking a file --------------------------------------------------------------------


def _where(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the file's key: data.target, not data.csv.target (the tag is pydantic's)."""
    parts = [str(p) for p in loc]
    if len(parts) > 2 and parts[0] == "data" and parts[1] in SOURCE_KINDS:
        del parts[1]
    return ".".join(parts) if parts else "(top level)"


def _message(error: dict[str, Any]) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        return f"unknown source {error['input'].get('source')!r}; one of {', '.join(SOURCE_KINDS)}"
    if kind == "union_tag_not_found":
        return f"missing source; one of {', '.join(SOURCE_KINDS)}"
    if kind == "string_pattern_mismatch":
        return "letters, digits, '.', '_' and '-' only (at most 64), starting with a letter or digit"
    return msg.removeprefix("Value error, ")


def parse(path: Path) -> TaskFile:
    """Read and validate a task file; each problem becomes one line `FILE: key: what is wrong`."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise TaskError(f"cannot read task file {path}: {err.strerror or err}") from err
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise TaskError(f"{path}: not UTF-8 text (byte {err.start})") from err
    except tomllib.TOMLDecodeError as err:
        raise TaskError(f"{path}: not valid TOML: {err}") from err
    try:
        spec = TaskFile.model_validate(document)
    except ValidationError as err:
        lines = [f"{path}: {_where(e['loc'])}: {_message(e)}" for e in err.errors()]  # type: ignore[arg-type]
        raise TaskError("\n".join(dict.fromkeys(lines))) from None
    _check_combination(spec, path)
    return spec


def _check_combination(spec: TaskFile, path: Path) -> None:
    """What pydantic cannot see key by key: the kind, source, metric, size and splits must fit together."""
    data = spec.data
    if spec.name in TASKS:
        raise TaskError(f"{path}: name: {spec.name!r} is a built-in task; choose another name")
    if spec.kind not in SOURCE_KINDS[data.source]:
        raise TaskError(
            f"{path}: data.source: a {data.source!r} source cannot feed a {spec.kind!r} task "
            f"(it feeds {', '.join(SOURCE_KINDS[data.source])})"
        )
    if spec.regression and spec.kind != "table":
        raise TaskError(f"{path}: data.regression: only table tasks are regressions, this one is {spec.kind!r}")
    metric = metric_of(spec)
    allowed = [m for m in KIND_METRICS[spec.kind] if spec.kind != "table" or METRICS[m].regression == spec.regression]
    if metric not in METRICS or metric not in allowed:
        what = "a regression" if spec.regression else f"a {spec.kind!r} task"
        raise TaskError(f"{path}: metric: {metric!r} does not score {what}; one of {', '.join(allowed)}")
    text = getattr(data, "text", None)
    if data.source in ("csv", "parquet"):
        if (spec.kind in ("graph", "graphs")) != (getattr(data, "nodes", None) is not None):
            raise TaskError(f"{path}: data.nodes: a graph from CSV names its nodes and edges files; other kinds do not")
        if spec.kind == "sequence" and not text:
            raise TaskError(f"{path}: data.text: a sequence task from a table names its text column")
        if spec.kind == "table" and text:
            raise TaskError(f"{path}: data.text: a table task has no text column; use kind = 'sequence'")
    needs_seq_len = data.source == "text" or bool(text)
    if needs_seq_len and spec.input.seq_len is None:
        raise TaskError(f"{path}: input.seq_len: missing (text is cut or padded to this many bytes)")
    if isinstance(data, ImagesSource):
        dense.check_degradation(str(path), spec.kind, data.degradation, data.factor, data.sigma)
    if spec.input.image is not None and spec.kind not in ("image", "dense"):
        raise TaskError(f"{path}: input.channels: an image size only fits an image task, this one is {spec.kind!r}")
    if isinstance(data, HfSource) and spec.kind == "image" and data.image is None:
        raise TaskError(f"{path}: data.image: name the column that holds the images")
    if spec.splits is not None and _gives_splits(spec, path):
        raise TaskError(f"{path}: splits: the data names its own train/val/test split; remove [splits]")


def metric_of(spec: TaskFile) -> str:
    """The file's metric, or the kind's default (accuracy; mse for a regression; bits_per_byte for lm; psnr)."""
    if spec.metric is not None:
        return spec.metric
    if spec.kind in ("lm", "dense"):
        return KIND_METRICS[spec.kind][0]
    return "mse" if spec.regression else "accuracy"


def _gives_splits(spec: TaskFile, path: Path) -> bool:
    """Whether the source itself says which example is in which split (the split files or folders)."""
    data = spec.data
    if isinstance(data, (TableSource, TextSource)):
        return data.path is None and getattr(data, "nodes", None) is None  # a CSV pair: known once read
    if isinstance(data, ImagesSource):
        root = _resolve(path, data.path)
        return root.is_dir() and any((root / d).is_dir() for d in ("train", "val", "validation", "test"))
    return False  # npz and hf: known only once read; a [splits] table there is used when the data has no split


def _resolve(task_file: Path, name: str) -> Path:
    """A data path as written in the file: relative to the file's folder, ~ expanded."""
    p = Path(name).expanduser()
    return p if p.is_absolute() else task_file.parent / p


def data_paths(spec: TaskFile, path: Path) -> list[Path]:
    data = spec.data
    names = data.paths() if isinstance(data, _Files) else [data.path]  # type: ignore[union-attr]
    return [_resolve(path, n) for n in names]


def fingerprint(path: Path, spec: TaskFile) -> str:
    """A short hash of the task file and its data files' names, sizes and modification times."""
    digest = hashlib.sha256(path.read_bytes())
    for root in data_paths(spec, path):
        files = [root] if not root.is_dir() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            try:
                st = f.stat()
            except OSError:
                digest.update(f"{f}:missing\n".encode())
                continue
            digest.update(f"{f.relative_to(root) if f != root else f.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


# -- the data behind a file ---------------------------------------------------------------------------

_DATASETS: OrderedDict[tuple[str, str], Dataset | nodes.Graph | GraphSet] = OrderedDict()
_KEEP = 4  # datasets kept in memory: a run asks for its task many times, rarely for more than one


def dataset(path: Path, spec: TaskFile, version: str) -> Dataset | nodes.Graph | GraphSet:
    """The file's data, read once per process and data version."""
    key = (str(path.resolve()), version)
    if key not in _DATASETS:
        _DATASETS[key] = _read(path, spec)
        while len(_DATASETS) > _KEEP:
            _DATASETS.popitem(last=False)
    _DATASETS.move_to_end(key)
    return _DATASETS[key]


def _read(path: Path, spec: TaskFile) -> Dataset | nodes.Graph | GraphSet:
    data = spec.data
    files = data_paths(spec, path)
    for f in files:
        if not f.exists():
            raise TaskError(f"{path}: data.{'path' if len(files) == 1 else 'train/val/test'}: {f} does not exist")
    if spec.kind in ("graph", "graphs"):  # one graph's nodes, or many graphs, from npz or a CSV pair (graphcsv)
        return graphcsv.read_source(spec.kind, files, getattr(data, "target", None), getattr(data, "features", None))
    if spec.kind == "dense" and isinstance(data, (NpzSource, ImagesSource)):
        read = (
            dense.read_npz(files[0])
            if isinstance(data, NpzSource)
            else dense.read_folder(files[0], data.degradation, data.factor, data.sigma, spec.input.image)
        )
    elif isinstance(data, NpzSource):
        read = sources.read_npz(files[0], spec.kind, data.regression)
    elif isinstance(data, ImagesSource):
        read = sources.read_image_folder(files[0], spec.input.image)
    elif isinstance(data, TableSource):
        reader = sources.read_csv if data.source == "csv" else sources.read_parquet
        tables = [reader(f) for f in files]
        if data.text:
            read = sources.text_classes(tables, data.text, data.targets[0], spec.input.seq_len)  # type: ignore[arg-type]
        else:
            read = sources.encode_table(
                tables, data.targets, data.features, data.categorical, data.encoding, data.regression
            )
    elif isinstance(data, HfSource):
        columns = {
            "target": data.targets,
            "image": data.image,
            "text": data.text,
            "features": data.features,
            "categorical": data.categorical,
            "encoding": data.encoding,
        }
        read = sources.read_hf(files[0], spec.kind, columns, spec.input.image, spec.input.seq_len, data.regression)
    else:
        read = sources.read_corpus(files, spec.input.seq_len)  # type: ignore[arg-type]
    if read.given is not None and spec.splits is not None:
        raise TaskError(f"{path}: splits: {read.where} names its own train/val/test split; remove [splits]")
    return read


@dataclass(frozen=True)
class FileLoader:
    """A task file's `Task.build`: its data, split as the source says or by the seeded fractions."""

    path: Path
    spec: TaskFile
    version: str

    def __call__(self, task: Task, data_dir: Path | None, download: bool, split_seed: int) -> SplitData:
        data = dataset(self.path, self.spec, self.version)
        if isinstance(data, (nodes.Graph, GraphSet)):
            fractions = None if self.spec.splits is None else (self.spec.splits.val, self.spec.splits.test)
            if isinstance(data, GraphSet):
                return graphsets.split_graphs(data, fractions, split_seed, task.name)
            return nodes.split_graph(data, fractions, split_seed, task.name)
        splits = self.spec.splits or Splits()
        return split(data, (splits.val, splits.test), split_seed, data.classes is not None, task.name)


def load(path: Path | str) -> Task:
    """The Task a task file defines (reads its data to learn the input shape and the classes)."""
    path = Path(path)
    spec = parse(path)
    version = fingerprint(path, spec)
    data = dataset(path, spec, version)
    if isinstance(data, (nodes.Graph, GraphSet)):
        outputs = len(data.classes)
    elif spec.kind == "lm":
        outputs = data.vocab_size or BYTE_VOCAB  # bytes, or a tokenizer's ids
    elif data.classes is not None:
        outputs = len(data.classes)
    elif spec.kind == "token":
        outputs = data.vocab_size or int(data.y.max()) + 1
    else:
        outputs = int(data.y.shape[1])
    return Task(
        name=spec.name,
        kind=spec.kind,
        in_shape=data.in_shape,
        num_classes=int(outputs),
        metric=metric_of(spec),
        epochs=spec.train.epochs,
        batch_size=spec.train.batch_size,
        lr=spec.train.lr,
        weight_decay=spec.train.weight_decay,
        max_params=spec.max_params,
        needs_data_dir=False,
        description=" ".join(spec.description.split()),
        vocab_size=data.vocab_size if isinstance(data, Dataset) and spec.kind == "sequence" else None,
        build=FileLoader(path, spec, version),
        fingerprint=version,
        out_shape=tuple(int(d) for d in data.y.shape[1:]) if spec.kind == "dense" else None,
        recipe=spec.recipe,
    )


def classes(task: Task) -> tuple[str, ...] | None:
    """The class names of a task file's task (None for other tasks, regressions and lm)."""
    if not isinstance(task.build, FileLoader):
        return None
    return dataset(task.build.path, task.build.spec, task.build.version).classes


# -- where tasks come from besides the built-in registry --------------------------------------------


def is_task_file(name: str) -> bool:
    return name.endswith(".toml") or os.path.isfile(name)


def entry_point_names() -> list[str]:
    """Tasks published by installed packages under the `agentarch.tasks` entry-point group."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def from_entry_point(name: str) -> Task | None:
    """The Task an installed package publishes as `name` (its callable returns the Task), or None."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        return None
    ep = found[0]
    try:
        target = ep.load()
        task = target() if callable(target) else target
    except TaskError:
        raise
    except Exception as err:  # a third-party package's bug must read as a problem with that package
        raise TaskError(f"entry point {ep.value!r} (task {name!r}): {type(err).__name__}: {err}") from err
    if not isinstance(task, Task):
        raise TaskError(f"entry point {ep.value!r} gave {type(task).__name__}, not an agentarch.tasks.Task")
    if task.name != name:
        raise TaskError(f"entry point {name!r} gave a task named {task.name!r}; the names must agree")
    if task.build is None and task.kind != "tabular":
        raise TaskError(f"entry point {ep.value!r}: task {name!r} has no build (its data loader)")
    return task


_LOADED: dict[str, Path] = {}
"""Task files this process has loaded, by task name: the evaluator hands its workers the task's name,
and a local worker (a thread of this process) finds the file again through it."""


def resolve(name: str) -> Task | None:
    """A task file (a path ending in .toml, or any existing file), the name of a task file this process
    has loaded, or an entry point's task; None if none of these."""
    if is_task_file(name):
        task = load(name)
        _LOADED[task.name] = Path(name).resolve()
        return task
    if name in _LOADED:
        return load(_LOADED[name])
    return from_entry_point(name)


def reference(task: Task) -> str:
    """How another process (a Ray worker) finds `task` again: its task file's absolute path if this process
    loaded it from one, else its name (a built-in task or an entry point's)."""
    path = _LOADED.get(task.name)
    return str(path) if path is not None else task.name


def listed_files(folder: Path = TASKS_DIR) -> list[Path]:
    """The task files in `folder` (./tasks/ by default), in name order."""
    return sorted(folder.glob("*.toml")) if folder.is_dir() else []
