"""Training checkpoints, the sandbox's side: what the trainer hands the host at an epoch's end, and how a fresh sandbox
continues from one.

A checkpoint is one safetensors file (never pickle): the model's state (`model.<key>`), the optimizer's per-parameter
tensors (`optimizer.<parameter index>.<slot>`), the random generators (`rng.*`: torch's CPU and CUDA states and the
trainer's shuffle as uint8 tensors, Python's and numpy's Mersenne twisters as int64) and the losses not yet on the
curve (`window`), with a small JSON document in the file's metadata (`META_KEY`): the epoch and step it was taken at,
the curve so far and the few RNG scalars. The host reads it as hostile input (agentarch/evaluation/checkpoints.py
checks the same names, dtypes and schema) and keeps the latest one; a resumed job finds it in scratch as RESUME_FILE
and continues from it, so a deterministic run resumed gives the weights an uninterrupted one gives, bit for bit.

Writing never fails training: a checkpoint that cannot be written (over the file-size limit, scratch full) turns
checkpointing off for the job with a note, and training goes on.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

CHECKPOINT_FILE = "checkpoint.safetensors"
"""Where the runner leaves its latest checkpoint in scratch (replaced atomically) for the host to read."""
RESUME_FILE = "resume.safetensors"
"""Where the host puts the checkpoint a resumed job continues from, before the job starts."""
META_KEY = "agentarch"
"""The safetensors metadata entry that holds the checkpoint's JSON document."""
VERSION = 1


def _tensor(values: Any) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.int64)


class Saver:
    """Writes a checkpoint at an epoch's end once `every_s` seconds have passed since the last one (or since training
    began), and tells the host with `emit`."""

    def __init__(self, out_dir: Path, every_s: float, emit: Callable[[dict[str, Any]], None]) -> None:
        self.path, self.every_s, self.emit = Path(out_dir) / CHECKPOINT_FILE, every_s, emit
        self.last = time.perf_counter()
        self.off: str | None = None  # why checkpointing stopped, for the training notes

    def epoch_end(
        self,
        epoch: int,
        step: int,
        model: nn.Module,
        optimizer: Any,
        shuffle: torch.Generator,
        curve: list[dict[str, float]],
        window: list[torch.Tensor],
    ) -> None:
        if self.off is not None or time.perf_counter() - self.last < self.every_s:
            return
        tensors = {f"model.{key}": value for key, value in model.state_dict().items()}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for index, param in enumerate(params):
            for slot, value in enumerate(optimizer.state.get(param, ())):
                tensors[f"optimizer.{index}.{slot}"] = value
        version, python_state, gauss = random.getstate()
        _, numpy_keys, numpy_pos, has_gauss, cached = np.random.get_state()
        tensors.update(
            {
                "rng.torch": torch.get_rng_state(),
                "rng.shuffle": shuffle.get_state(),
                "rng.python": _tensor(python_state),
                "rng.numpy": _tensor(numpy_keys.tolist()),
                "window": torch.stack(window).float() if window else torch.zeros(0),
            }
        )
        if torch.cuda.is_available():
            tensors.update({f"rng.cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
        meta = {
            "version": VERSION,
            "epoch": epoch,
            "step": step,
            "curve": curve,
            "python": [version, gauss],
            "numpy": [int(numpy_pos), int(has_gauss), float(cached)],
        }
        # copies on the CPU, each its own storage: safetensors refuses shared storage (tied weights)
        data = save_tensors(
            {name: t.detach().to("cpu", copy=True).contiguous() for name, t in tensors.items()},
            metadata={META_KEY: json.dumps(meta)},
        )
        part = self.path.with_suffix(".part")
        try:
            part.write_bytes(data)
            os.replace(part, self.path)
        except OSError as err:  # over the file-size limit or scratch full: train on without checkpoints
            part.unlink(missing_ok=True)
            self.off = f"checkpoints off after epoch {epoch}: {type(err).__name__}: {err}"
            return
        self.last = time.perf_counter()
        self.emit({"event": "checkpoint", "epoch": epoch, "step": step, "bytes": len(data)})


@dataclass
class Resume:
    """A checkpoint read back in a fresh sandbox: `restore` puts its state into the trainer's objects."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> Resume:
        """Read the checkpoint the host put in scratch, then remove the file: scratch is capped, and the checkpoints
        this job writes and its outputs need the room (the last checkpoint stays until the job ends, for the host)."""
        data = Path(path).read_bytes()
        try:
            Path(path).unlink()
        except OSError:  # a scratch that will not let go of it: the room is merely not freed
            pass
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        return cls(load_tensors(data), json.loads(header["__metadata__"][META_KEY]))

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])

    def restore(
        self,
        model: nn.Module,
        optimizer: Any,
        shuffle: torch.Generator,
        curve: list[dict[str, float]],
        window: list[torch.Tensor],
        device: torch.device,
    ) -> int:
        """Load the model, optimizer, generators, curve and pending losses; the step training goes on from."""
        t = self.tensors
        model.load_state_dict({key[6:]: value for key, value in t.items() if key.startswith("model.")}, strict=True)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        slots: dict[int, dict[int, torch.Tensor]] = {}
        for name, value in t.items():
            if name.startswith("optimizer."):
                _, index, slot = name.split(".")
                slots.setdefault(int(index), {})[int(slot)] = value
        scalars_on = device if getattr(optimizer, "fused", False) else torch.device("cpu")
        for index, state in slots.items():
            param = params[index]  # moments live with their parameter; a scalar (the step count) where AdamW keeps it
            optimizer.state[param] = tuple(
                torch.empty_like(param).copy_(state[slot])
                if state[slot].shape == param.shape
                else state[slot].to(scalars_on)
                for slot in sorted(state)
            )
        torch.set_rng_state(t["rng.torch"])
        shuffle.set_state(t["rng.shuffle"])
        for name, state in t.items():
            if name.startswith("rng.cuda.") and torch.cuda.is_available():
                torch.cuda.set_rng_state(state, int(name.rsplit(".", 1)[1]))
        version, gauss = self.meta["python"]
        random.setstate((version, tuple(t["rng.python"].tolist()), gauss))
        pos, has_gauss, cached = self.meta["numpy"]
        np.random.set_state(("MT19937", t["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
        curve[:] = self.meta["curve"]
        window[:] = [value.to(device) for value in t["window"]]
        return int(self.meta["step"])
