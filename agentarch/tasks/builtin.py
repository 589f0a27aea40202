"""The built-in tasks: what each one is (`TASKS`) and how its data is made (`BUILDERS`): scikit-learn's bundled
digits (classified, and restored: agentarch.tasks.dense), generated multi-query associative recall, a generated
stochastic block model's nodes (agentarch.tasks.nodes) and coloured graphs (agentarch.tasks.graphsets), the running Python's standard library as bytes, and the
official image datasets read from files (`agentarch.tasks.downloads`).

Its own module because these tasks are defined in code, where a task file or an entry point brings its own
definition and loader. It stays light: the heavier readers (scikit-learn) are imported inside the builders that
need them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from agentarch.tasks import dense, graphsets, nodes
from agentarch.tasks.downloads import FILE_SOURCES, build_from_files
from agentarch.tasks.splits import split_indices
from agentarch.tasks.task import IGNORE_INDEX, SplitData, Task, TaskError

_IMAGE_INPUT = (
    "Inputs arrive as float tensors (B, C, H, W) normalized per channel to zero mean and unit variance; "
    "the network returns logits (B, num_classes)."
)


def _held_out_task(
    name: str,
    in_shape: tuple[int, int, int],
    num_classes: int,
    *,
    epochs: int,
    weight_decay: float,
    max_params: int,
    train: str,
    val: str,
    test: str,
    what: str,
    note: str,
) -> Task:
    """A torchvision-format image task: a seeded 90/10 split of the official training set, official test set."""
    return Task(
        name=name,
        kind="image",
        in_shape=in_shape,
        num_classes=num_classes,
        metric="accuracy",
        epochs=epochs,
        batch_size=128,
        lr=1e-3,
        weight_decay=weight_decay,
        max_params=max_params,
        needs_data_dir=True,
        description=(
            f"{what}, {train} training and {val} validation images (a seeded 90/10 split of the official "
            f"training set) and the official {test} test images. {note} {_IMAGE_INPUT}"
        ),
    )


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="digits",
            kind="image",
            in_shape=(1, 8, 8),
            num_classes=10,
            metric="accuracy",
            epochs=30,
            batch_size=64,
            lr=3e-3,
            weight_decay=0.01,
            max_params=1_000_000,
            needs_data_dir=False,
            description=(
                "Handwritten digit classification on scikit-learn's bundled 8x8 grayscale images "
                "(1,797 images, 10 classes, split 60/20/20 into train/validation/test). The images are tiny "
                "and few, so small convolutional or MLP models train in seconds and overfitting is the main "
                f"risk. {_IMAGE_INPUT}"
            ),
        ),
        Task(
            name="mqar",
            kind="token",
            in_shape=(64,),
            num_classes=64,
            metric="query_accuracy",
            epochs=20,
            batch_size=64,
            lr=1e-3,
            weight_decay=0.1,
            max_params=1_000_000,
            needs_data_dir=False,
            description=(
                "Multi-query associative recall (Zoology, Arora et al. 2023), a probe of in-context recall. "
                "Each sequence of 64 token ids (vocabulary 64, id 0 is padding) starts with 8 key-value "
                "pairs k1 v1 ... k8 v8 (keys from [1, 32), values from [32, 64)); the rest is padding in which "
                "each key appears again once, at a random position. At each such query position the model must "
                "output the value that was paired with that key earlier in the sequence; only query positions "
                "are scored. The network receives long ids (B, 64) and returns logits (B, 64, 64). Recall "
                "needs content-based lookup across the sequence (attention or a comparable mechanism); "
                "purely local mixing cannot solve it."
            ),
        ),
        Task(
            name="stdlib-bytes",
            kind="lm",
            in_shape=(128,),
            num_classes=256,
            metric="bits_per_byte",
            epochs=1,
            batch_size=32,
            lr=3e-3,
            weight_decay=0.1,
            max_params=1_000_000,
            needs_data_dir=False,
            fingerprint="py{}.{}.{}".format(*sys.version_info[:3]),  # patch releases may edit a file
            description=(
                "Byte-level language modelling on Python source code: the standard library's own source files "
                "of the running Python, cut into sequences of 128 bytes (UTF-8 bytes, vocabulary 256). Whole "
                "files are held out: about 400 KB of training text from 15 modules, validation and test "
                "text from other modules, so the data is the same on every machine with the same Python "
                "version and needs no download. The network receives long ids (B, 128) and returns logits "
                "(B, 128, 256), where position t predicts byte t + 1 from bytes 0..t only: it must be causal "
                "(the trainer shifts the targets, and a network that looks ahead is refused). Scored by bits "
                "per byte on the validation files (lower is better); a uniform guess is 8, and Python source "
                "rewards models that capture indentation, keywords and identifiers repeated within a file."
            ),
        ),
        *(
            Task(
                name=name,
                kind="dense",
                in_shape=in_shape,
                num_classes=1,
                metric="psnr",
                epochs=20,
                batch_size=32,
                lr=2e-3,
                weight_decay=0.0,
                max_params=500_000,
                needs_data_dir=False,
                out_shape=(1, 16, 16),
                description=(
                    f"{what} on scikit-learn's digits: each 8x8 digit upsampled to a clean 16x16 grey image (bicubic, "
                    "pixel values in [0, 1]; 1,797 images split 60/20/20, stratified by digit). " + how + " The "
                    "network returns the clean image (B, 1, 16, 16) in the same units. Scored by PSNR in dB on the "
                    "validation images (higher is better; SSIM is reported beside it)."
                ),
            )
            for name, what, in_shape, how in (
                (
                    "digits-sr2",
                    "Super-resolution x2",
                    (1, 8, 8),
                    "The input is the clean image downscaled by 2 (the mean of each 2x2 block), a float tensor "
                    "(B, 1, 8, 8); upsampling it is the bar to clear (validation: nearest 21.3 dB, bicubic 28.8 dB).",
                ),
                (
                    "digits-denoise",
                    "Denoising",
                    (1, 16, 16),
                    "The input is the clean image plus Gaussian noise of std 0.1 (fixed seed, not clipped), a float "
                    "tensor (B, 1, 16, 16); the noisy input itself scores 21.5 dB (clipped to [0, 1], as outputs are).",
                ),
            )
        ),
        Task(
            name="sbm-nodes",
            kind="graph",
            in_shape=(nodes.SBM_FEATURES,),
            num_classes=nodes.SBM_COMMUNITIES,
            metric="accuracy",
            epochs=100,
            batch_size=nodes.SBM_NODES,  # the whole graph: a graph task trains full-batch, one step per epoch
            lr=1e-2,
            weight_decay=5e-4,
            max_params=100_000,
            needs_data_dir=False,
            description=(
                "Node classification on one graph generated from a stochastic block model (fixed seed, no download): "
                "600 nodes in 4 equal communities, an edge inside a community with probability 0.05 and across "
                "with 0.01 (about 12 neighbours a node, 7.5 of them in its own community), edges stored in both "
                "directions, no self-loops. Each node has 16 features: its community's indicator plus Gaussian noise "
                "of std 1 in the first 4, noise alone in the other 12, so a node's own features give its community "
                "for about half the nodes and its neighbourhood for most of the rest. The nodes are split 20/20/60 "
                "into train/validation/test (stratified); only the training nodes' labels are given. The network "
                "gets the whole graph every step, x (N, 16) standardised per feature and edge_index (2, E), and "
                "returns logits (N, 4); chance is 25%."
            ),
        ),
        Task(
            name="sbm-graphs",
            kind="graphs",
            in_shape=(graphsets.SBM_COLOURS + graphsets.SBM_NOISE_FEATURES,),
            num_classes=len(graphsets.SBM_SAME),
            metric="accuracy",
            epochs=30,
            batch_size=32,  # graphs per step
            lr=1e-2,
            weight_decay=5e-4,
            max_params=100_000,
            needs_data_dir=False,
            description=(
                "Graph classification over 1,200 small generated graphs (fixed seed, no download), 12 to 28 nodes "
                "each, every node one of 4 colours. The class says who joins whom: in class 0 three quarters of a "
                "node's edges join nodes of its own colour, in class 1 a quarter (as a random graph's would), in "
                "class 2 none; every class has about 3 edges a node, stored in both directions, no self-loops, so "
                "neither size nor degree tells the classes apart, and neither do the colours' counts. Each node has "
                "8 features: its colour's indicator plus Gaussian noise of std 0.5 in the first 4, noise alone in "
                "the other 4. The graphs are split 60/20/20 into train/validation/test (stratified). The network "
                "gets a mini-batch of graphs, x (N, 8) standardised per feature, edge_index (2, E) and batch (N,) "
                "mapping each node to its graph's row, and returns logits (G, 3), one row per graph; chance is 33%."
            ),
        ),
        _held_out_task(
            "mnist",
            (1, 28, 28),
            10,
            epochs=10,
            weight_decay=0.01,
            max_params=2_000_000,
            train="54,000",
            val="6,000",
            test="10,000",
            what="MNIST handwritten digits: 28x28 grayscale, 10 classes",
            note="Strong models reach above 99% accuracy.",
        ),
        _held_out_task(
            "fashion-mnist",
            (1, 28, 28),
            10,
            epochs=10,
            weight_decay=0.01,
            max_params=2_000_000,
            train="54,000",
            val="6,000",
            test="10,000",
            what="Fashion-MNIST: 28x28 grayscale photos of clothing in 10 classes (shirt, sneaker, bag, ...)",
            note="Harder than MNIST: some classes (shirt, T-shirt, pullover, coat) differ only in fine shape.",
        ),
        _held_out_task(
            "cifar10",
            (3, 32, 32),
            10,
            epochs=30,
            weight_decay=0.05,
            max_params=5_000_000,
            train="45,000",
            val="5,000",
            test="10,000",
            what="CIFAR-10: 32x32 colour photos of 10 object classes (airplane, cat, ship, ...)",
            note="Natural images with varied backgrounds; convolutional inductive biases and normalization matter.",
        ),
        _held_out_task(
            "cifar100",
            (3, 32, 32),
            100,
            epochs=30,
            weight_decay=0.05,
            max_params=5_000_000,
            train="45,000",
            val="5,000",
            test="10,000",
            what="CIFAR-100: the CIFAR images with 100 fine-grained classes (500 training images per class)",
            note="Few examples per class, so capacity has to be balanced against overfitting.",
        ),
        _held_out_task(
            "svhn",
            (3, 32, 32),
            10,
            epochs=15,
            weight_decay=0.05,
            max_params=5_000_000,
            train="about 66,000",
            val="7,300",
            test="26,032",
            what=(
                "SVHN: 32x32 colour crops of house numbers from Street View, labelled with the digit in the "
                "centre (10 classes)"
            ),
            note="Neighbouring digits often intrude at the edges of the crop.",
        ),
        *(
            Task(
                name=f"nb201-{dataset}",
                kind="tabular",
                in_shape=in_shape,
                num_classes=classes,
                metric="accuracy",
                epochs=200,
                batch_size=256,
                lr=0.1,
                weight_decay=5e-4,
                max_params=2_000_000,
                needs_data_dir=False,
                description=(
                    f"NAS-Bench-201 on {label}, answered from the published table: one query returns the cell's "
                    "validation accuracy (the search signal); the cell a search picks is scored by its test "
                    "accuracy after 200 epochs, averaged over the benchmark's seeds. Only cells of the nb201 "
                    "search space can be queried."
                ),
            )
            for dataset, label, in_shape, classes in (
                ("cifar10", "CIFAR-10", (3, 32, 32), 10),
                ("cifar100", "CIFAR-100", (3, 32, 32), 100),
                ("imagenet16", "ImageNet16-120 (16x16 downsampled ImageNet, 120 classes)", (3, 16, 16), 120),
            )
        ),
    )
}


# -- digits -------------------------------------------------------------------------------------


def _build_digits(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> SplitData:
    """scikit-learn's bundled digits, split 60/20/20 (stratified, seeded)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.uint8)[:, None, :, :]  # values are whole numbers 0..16
    y = digits.target.astype(np.int64)
    rest, test = split_indices(y, 0.2, split_seed)
    train_in_rest, val_in_rest = split_indices(y[rest], 0.25, split_seed)
    train, val = rest[train_in_rest], rest[val_in_rest]
    return SplitData(x[train], y[train], x[val], y[val], x[test], y[test])


# -- mqar ---------------------------------------------------------------------------------------

MQAR_SIZES = {"train": 4000, "val": 500, "test": 500}
MQAR_NUM_PAIRS = 8


def make_mqar(
    n: int, seq_len: int, vocab: int, num_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Generate `n` multi-query associative recall sequences (Zoology, Arora et al. 2023).

    Each sequence is `k1 v1 k2 v2 ... kK vK` followed by a query region of padding (id 0) in which
    every key appears once more, at distinct random positions in random order. Keys are distinct
    ids from [1, vocab // 2) and values distinct ids from [vocab // 2, vocab), as in Zoology. The
    label at a key's query position is its value; every other label is IGNORE_INDEX.

    Returns (x, y), both int64 (n, seq_len).
    """
    half = vocab // 2
    if num_pairs < 1 or half - 1 < num_pairs or vocab - half < num_pairs:
        raise TaskError(
            f"mqar: a vocabulary of {vocab} cannot hold {num_pairs} distinct keys in [1, {half}) "
            f"and values in [{half}, {vocab})"
        )
    if seq_len < 3 * num_pairs:
        raise TaskError(
            f"mqar: seq_len {seq_len} is too short for {num_pairs} pairs and their queries "
            f"(needs at least {3 * num_pairs})"
        )
    if n < 0:
        raise TaskError(f"mqar: cannot make {n} sequences")
    rows = np.arange(n)[:, None]
    # Distinct draws per row: the first K of a random permutation of the candidates.
    keys = np.argsort(rng.random((n, half - 1)), axis=1)[:, :num_pairs] + 1
    values = np.argsort(rng.random((n, vocab - half)), axis=1)[:, :num_pairs] + half
    query_slots = seq_len - 2 * num_pairs
    positions = np.argsort(rng.random((n, query_slots)), axis=1)[:, :num_pairs] + 2 * num_pairs
    x = np.zeros((n, seq_len), dtype=np.int64)
    x[:, 0 : 2 * num_pairs : 2] = keys
    x[:, 1 : 2 * num_pairs : 2] = values
    x[rows, positions] = keys
    y = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    y[rows, positions] = values
    return x, y


def _build_mqar(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> SplitData:
    """Generated from the split seed, one independent generator stream per split."""
    streams = np.random.SeedSequence(split_seed).spawn(3)
    made = {
        split: make_mqar(
            MQAR_SIZES[split], task.in_shape[0], task.num_classes, MQAR_NUM_PAIRS, np.random.default_rng(stream)
        )
        for split, stream in zip(("train", "val", "test"), streams)
    }
    return SplitData(*made["train"], *made["val"], *made["test"])


# -- stdlib-bytes -------------------------------------------------------------------------------

STDLIB_FILES: dict[str, tuple[str, ...]] = {
    "train": (
        "argparse.py",
        "calendar.py",
        "contextlib.py",
        "copy.py",
        "csv.py",
        "fractions.py",
        "functools.py",
        "graphlib.py",
        "heapq.py",
        "queue.py",
        "random.py",
        "shlex.py",
        "string.py",
        "tempfile.py",
        "textwrap.py",
    ),
    "val": ("gettext.py", "pprint.py"),
    "test": ("bisect.py", "colorsys.py", "numbers.py", "weakref.py"),
}
"""The standard-library modules of each split: a fixed, sorted list, so the split never depends on what
else an installation carries (a file a Python lacks is skipped, the rest keep their split)."""


def stdlib_corpus(split: str, stdlib: Path | None = None) -> bytes:
    """The bytes of `split`'s standard-library files, concatenated in the listed order."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"]) if stdlib is None else stdlib
    return b"".join((root / name).read_bytes() for name in STDLIB_FILES[split] if (root / name).is_file())


def _build_stdlib_bytes(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> SplitData:
    """Non-overlapping windows of each split's bytes (the remainder is dropped); the split seed plays no
    part, because the held-out files are fixed."""
    seq_len = task.in_shape[0]
    arrays = []
    for split in ("train", "val", "test"):
        data = np.frombuffer(stdlib_corpus(split), dtype=np.uint8)
        if len(data) < seq_len:
            raise TaskError(
                f"{task.name}: this Python has {len(data)} bytes of the {split} files "
                f"({', '.join(STDLIB_FILES[split])}) in its standard library; at least {seq_len} are needed"
            )
        ids = data[: len(data) // seq_len * seq_len].reshape(-1, seq_len).astype(np.int64)
        arrays += [ids, ids.copy()]  # the labels of a language model are its inputs; the trainer shifts
    return SplitData(*arrays)


# -- how preparation finds each built-in task's data ------------------------------------------------

IMAGE_SCALE: dict[str, float] = {
    "digits": 16.0,
    "mnist": 255.0,
    "fashion-mnist": 255.0,
    "cifar10": 255.0,
    "cifar100": 255.0,
    "svhn": 255.0,
}
"""The largest pixel value of each built-in image task's stored images (the digits are whole numbers 0..16); an
image task without an entry is 8-bit (255)."""

BUILDERS: dict[str, Callable[[Task, Path | None, bool, int], SplitData]] = {
    "digits": _build_digits,
    "mqar": _build_mqar,
    "stdlib-bytes": _build_stdlib_bytes,
    "digits-sr2": dense.build_digits_sr,
    "digits-denoise": dense.build_digits_denoise,
    "sbm-nodes": nodes.build_sbm,
    "sbm-graphs": graphsets.build_sbm,
    **{name: build_from_files for name in FILE_SOURCES},
}
