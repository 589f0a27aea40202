"""Tabular NAS benchmarks: a NAS-Bench-201 query answered from the published table, not by training.

One query = one evaluation: the search sees the validation accuracy of a cell (the search signal);
the test accuracy of the cell a search finally picks is the score to report. This is how every
NAS-Bench-201 baseline is compared, so our random search and evolution can be checked against the
paper's numbers exactly and in seconds (Dong & Yang, ICLR 2020; table as packaged by NASLib and
NATS-Bench, see agentarch/tasks/data/README.md).

Each cell also carries its parameter and FLOP counts per dataset (`nb201_costs.csv.gz`, computed from the
rendered networks by scripts/nb201_counts.py and counted as the sandbox counts a candidate), so a search with
several objectives (accuracy against size) runs on the table too.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from agentarch.errors import AgentarchError

TABLE_FILE = "nb201.csv.gz"
TABLE_SHA256 = "976a55fd0a597e117fe86a8fbf9147dba55437d78ac762be2c0b7049d44e5e1f"
"""sha256 of the decompressed CSV, as published with the shared data."""
COSTS_FILE = "nb201_costs.csv.gz"
"""Parameters and FLOPs of every cell per dataset, in the table's row order (scripts/nb201_counts.py writes it)."""

DATASETS = ("cifar10", "cifar100", "imagenet16")


class TableError(AgentarchError, ValueError):
    """A query the table cannot answer; the message says what to fix."""


@dataclass(frozen=True)
class TableScore:
    """What one query returns: accuracies in percent, as the benchmark reports them, and the cell's network size
    (parameters; FLOPs of one forward pass, a multiply-add counting 2) on the dataset's images."""

    arch: str
    val_accuracy: float
    test_accuracy: float
    params: int
    flops: int

    def measures(self) -> dict[str, float]:
        """The cost measures by their archive column names, as an `Observation` carries them."""
        return {"params": self.params, "flops": self.flops}


class NB201Table:
    """All 15,625 NAS-Bench-201 cells with validation and test accuracy, parameters and FLOPs on three datasets."""

    def __init__(
        self,
        archs: list[str],
        val: dict[str, np.ndarray],
        test: dict[str, np.ndarray],
        params: dict[str, np.ndarray],
        flops: dict[str, np.ndarray],
    ) -> None:
        self.archs = archs
        self.row = {arch: i for i, arch in enumerate(archs)}
        self.val = val
        self.test = test
        self.params = params
        self.flops = flops

    @classmethod
    def from_csv_bytes(cls, raw: bytes, costs: bytes) -> NB201Table:
        """The table from its CSV and the costs CSV, which must list the same cells in the same order."""
        rows = list(csv.DictReader(raw.decode().splitlines()))
        cost_rows = list(csv.DictReader(costs.decode().splitlines()))
        archs = [r["arch_str"] for r in rows]
        if [r["arch_str"] for r in cost_rows] != archs:
            raise TableError(
                "the packaged NAS-Bench-201 costs do not list the table's cells in order; reinstall agentarch"
            )
        val = {d: np.array([float(r[f"{d}_val_naslib"]) for r in rows]) for d in DATASETS}
        test = {d: np.array([float(r[f"{d}_test"]) for r in rows]) for d in DATASETS}
        params = {d: np.array([int(r[f"{d}_params"]) for r in cost_rows]) for d in DATASETS}
        flops = {d: np.array([int(r[f"{d}_flops"]) for r in cost_rows]) for d in DATASETS}
        return cls(archs, val, test, params, flops)

    def query(self, dataset: str, arch: str) -> TableScore:
        """Look up one cell; the arch string must be in the benchmark's canonical form."""
        if dataset not in DATASETS:
            raise TableError(f"NAS-Bench-201 has no dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
        try:
            i = self.row[arch]
        except KeyError:
            raise TableError(f"{arch!r} is not a NAS-Bench-201 cell string; expected e.g. {self.archs[1]!r}") from None
        return TableScore(
            arch,
            float(self.val[dataset][i]),
            float(self.test[dataset][i]),
            int(self.params[dataset][i]),
            int(self.flops[dataset][i]),
        )

    def optimum(self, dataset: str, column: str = "test") -> TableScore:
        """The best cell of the whole space by `column` (the ceiling a search is judged against)."""
        i = int(np.argmax((self.test if column == "test" else self.val)[dataset]))
        return self.query(dataset, self.archs[i])


def table_bytes() -> bytes:
    """The decompressed table shipped inside the package, checked against its published hash."""
    raw = gzip.decompress(resources.files("agentarch.tasks.data").joinpath(TABLE_FILE).read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != TABLE_SHA256:
        raise TableError(f"the packaged NAS-Bench-201 table is corrupt (sha256 {digest}); reinstall agentarch")
    return raw


@cache
def nb201_table() -> NB201Table:
    """The table with its costs, read once per process (about 0.2 s)."""
    costs = gzip.decompress(resources.files("agentarch.tasks.data").joinpath(COSTS_FILE).read_bytes())
    return NB201Table.from_csv_bytes(table_bytes(), costs)
