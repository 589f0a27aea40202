"""Reading a user's npz file without trusting it: every task kind's npz reader (sources, dense, nodes) loads
through `load_npz`, so the checks below are made once.

np.load allocates whatever shape a member's header declares before reading its data (a 64 TiB claim is a
MemoryError, a smaller one a deflate bomb read whole), and hands a member that is not an .npy over as raw bytes.
`load_npz` reads each member's header first and refuses, as a TaskError naming the file and the array, a member
that is no array, a shape that needs more bytes than the member holds, and arrays past a share of the machine's
memory. Its own module because three readers share it and `sources.py` holds the others.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from agentarch.tasks.task import TaskError

MEMORY_SHARE = 4
"""An npz's arrays may take at most 1/MEMORY_SHARE of the machine's memory, as their headers declare them: the
readers copy them (splits, floats, the cache) several times over, and a header may claim any size at all."""
FALLBACK_MEMORY_BYTES = 16 * 2**30
"""The machine's memory where the system does not say."""
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
"""The .npy header readers by format version: the versions np.savez writes for arrays of numbers."""


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an npz file by name, once each member's header has passed (module docstring); any problem is
    a TaskError naming the file."""
    try:
        with zipfile.ZipFile(path) as npz:
            total = 0
            for member in npz.infolist():
                key = member.filename.removesuffix(".npy")
                with npz.open(member) as f:
                    try:
                        header = NPY_HEADERS[np.lib.format.read_magic(f)]
                        shape, _, dtype = header(f)
                    except (ValueError, KeyError):  # not the magic, a version we do not read, a bad header
                        raise TaskError(f"{path}: {key} is not a NumPy array (save it with np.savez)") from None
                    if dtype.hasobject:
                        continue  # np.load refuses it below (allow_pickle=False) before reading its data
                    size = math.prod(shape) * dtype.itemsize
                    if size > member.file_size - f.tell():
                        raise TaskError(
                            f"{path}: {key} declares shape {shape} ({size:,} bytes) but holds "
                            f"{member.file_size:,} bytes; save it again with np.savez"
                        )
                total += size
            if total > (cap := _memory_bytes() // MEMORY_SHARE):
                raise TaskError(
                    f"{path}: its arrays take {total:,} bytes, more than {cap:,} (a share of this machine's memory)"
                )
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in arrays.files}
    except TaskError:
        raise
    except zipfile.BadZipFile as err:
        raise TaskError(f"{path}: not an npz file ({err}); save the arrays with np.savez") from err
    except (OSError, ValueError, EOFError) as err:
        raise TaskError(f"cannot read {path}: {err}") from err
    except MemoryError:
        raise TaskError(f"{path}: its arrays do not fit in this machine's memory") from None


def _memory_bytes() -> int:
    """The machine's physical memory, from the system where it says."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows) or no such name
        return FALLBACK_MEMORY_BYTES
