"""The one way a candidate's archive row starts: who proposed which code, from which parents, in which run.

Every proposer's candidates go through it (a person's file, a baseline's architecture, an LLM's
answer, a NAS-Bench-201 table's best cell), so their rows hold the same columns and the same text
hash, and archive-level dedup compares like with like. The outcome columns (status, reason,
scores) are added by whoever judged the candidate. Its name says what it is (`agentarch.store.names.candidate_name`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentarch.evaluation import dedup


def candidate_row(
    *,
    run_id: str | None,
    task: str,
    name: str,
    proposer: str,
    code: str,
    parents: Sequence[int] = (),
    space: str | None = None,
    arch: str | None = None,
) -> dict[str, Any]:
    """The identity columns of a candidate, with the whitespace-normalized hash of its code.

    The AST hash is not among them: it needs code that parses, which only the static check knows.
    """
    return {
        "run_id": run_id,
        "task": task,
        "name": name,
        "proposer": proposer,
        "parents": list(parents),
        "code": code,
        "text_hash": dedup.whitespace_hash(code),
        "space": space,
        "arch": arch,
    }
