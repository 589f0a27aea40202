"""The latest training checkpoint of each candidate in flight, kept beside the archive so that a lost job resumes.

A sandbox job hands the host a checkpoint now and then (agentarch/evaluation/checkpoints.py checks it as hostile
input). The orchestrator keeps the latest one per proposal here, in `<archive>.resumes/`, beside the archive file as
its graphs and LangGraph checkpoints are: one folder per proposal key, one file in it, named by the job it belongs to
(`job`: the code and training it was taken under), written to a temporary name, flushed and renamed into place, so a
reader never sees half a file and a kill leaves the previous one whole. `agentarch run --resume` gives a candidate's
new job the checkpoint of the same job, if there is one; the file goes once the candidate is recorded.

Only bytes live here: the store neither reads nor trusts what is inside (the evaluation checks it again before a
job is given it).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from agentarch.store.handle import Handle

SUFFIX = ".safetensors"
_JOB = re.compile(r"[0-9a-f]{64}")


class Resumes(Handle):
    """The part of `Archive` that keeps the candidates' latest training checkpoints beside the archive file."""

    @property
    def resumes_dir(self) -> Path:
        """`<archive>.resumes/`, beside the archive file."""
        return self.path.with_name(self.path.name + ".resumes")

    def _proposal_dir(self, key: str) -> Path:
        return self.resumes_dir / hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]

    def keep_checkpoint(self, key: str, job: str, data: bytes) -> None:
        """Keep `data` as proposal `key`'s latest checkpoint of `job` (a sha256), replacing any earlier one."""
        if not _JOB.fullmatch(job):
            raise ValueError(f"{job!r} is not a job's sha256")
        folder = self._proposal_dir(key)
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, folder / f"{job}{SUFFIX}")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        for other in folder.glob(f"*{SUFFIX}"):  # another job's (code that changed since): no longer the latest
            if other.name != f"{job}{SUFFIX}":
                other.unlink(missing_ok=True)

    def checkpoint(self, key: str, job: str, limit: int) -> bytes | None:
        """Proposal `key`'s latest checkpoint of `job`, or None: none kept, another job's, or over `limit` bytes."""
        path = self._proposal_dir(key) / f"{job}{SUFFIX}"
        try:
            with path.open("rb") as stream:
                data = stream.read(limit + 1)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return data if len(data) <= limit else None

    def drop_checkpoints(self, key: str) -> None:
        """Remove whatever is kept for proposal `key`: it is recorded, and will not train again."""
        shutil.rmtree(self._proposal_dir(key), ignore_errors=True)
