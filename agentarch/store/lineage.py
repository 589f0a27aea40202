"""A candidate's family: the candidates that name it as a parent, how many children each candidate of a task has,
and its lineage tree (ancestry and descent), for the candidate page, the lineage view and few-shot selection.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from agentarch.store.archive import Archive
from agentarch.store.browse import readable_names
from agentarch.store.handle import _IDS


def children(archive: Archive, candidate_id: int) -> list[dict[str, Any]]:
    """The candidates that name this one among their parents (id, name, status), oldest first.

    `instr` skips most rows cheaply before `json_each` checks the parents list exactly (12 is not 112).
    """
    sql = (
        "SELECT id, name, status FROM candidates WHERE id > ? AND instr(parents, ?) > 0 "
        "AND EXISTS (SELECT 1 FROM json_each(parents) WHERE value = ?) ORDER BY id"
    )
    return list(archive.db.query(sql, [candidate_id, str(candidate_id), candidate_id]))


def child_counts(archive: Archive, task: str) -> Counter[int]:
    """How many candidates of the task (whatever became of them) name each candidate as a parent."""
    rows = archive.db.execute(
        "SELECT p.value, COUNT(*) FROM candidates c, json_each(c.parents) p WHERE c.task = ? GROUP BY p.value",
        [task],
    )
    return Counter({int(parent): int(n) for parent, n in rows})


LINEAGE_NODES = 300
"""The most candidates a lineage tree shows on each side (ancestors, descendants): a prolific parent of a long
run can have thousands of descendants, and a page of them is as far as a person reads."""


@dataclass
class Node:
    """One candidate in a lineage tree: its listing row and the nodes below it (its parents in an ancestry, its
    children in a descent). `repeat` marks a candidate already shown elsewhere in the same tree (lineage is a graph:
    two parents can share an ancestor), whose own branches are not repeated."""

    row: dict[str, Any]
    below: list[Node] = field(default_factory=list)
    repeat: bool = False


@dataclass
class Lineage:
    """A candidate's ancestry (it at the root, its parents below, theirs below them) and descent, and how many
    candidates did not fit (`LINEAGE_NODES` per side)."""

    ancestry: Node
    descent: Node
    ancestors: int
    descendants: int
    cut: int


def lineage(archive: Archive, candidate_id: int, limit: int = LINEAGE_NODES) -> Lineage:
    """The ancestry and descent of a candidate, breadth first (nearest relatives first), each node with its
    listing row (name, status, score).

    The parent links of every candidate that has any are read in one query and walked in Python: following
    children one query per node would cost a scan of the candidates each.
    """
    archive.candidate(candidate_id)
    parents_of: dict[int, list[int]] = {}
    children_of: dict[int, list[int]] = defaultdict(list)
    for cid, parents in archive.db.execute("SELECT id, parents FROM candidates WHERE length(parents) > 2 ORDER BY id"):
        linked = [p for p in json.loads(parents) if isinstance(p, int)]
        parents_of[cid] = linked
        for parent in linked:
            children_of[parent].append(cid)
    up, up_cut = _walk(candidate_id, lambda i: parents_of.get(i, []), limit)
    down, down_cut = _walk(candidate_id, lambda i: children_of.get(i, []), limit)
    rows = {row["id"]: row for row in archive.listing(f"WHERE c.id IN ({_IDS})", [json.dumps([*up, *down])])}
    names = readable_names(archive, rows.values())
    for row in rows.values():
        row["label"] = names[row["id"]]
    return Lineage(
        _tree(candidate_id, up, rows), _tree(candidate_id, down, rows), len(up) - 1, len(down) - 1, up_cut + down_cut
    )


def _walk(start: int, links: Any, limit: int) -> tuple[dict[int, list[int]], int]:
    """Breadth first from `start`: each reached id with the ids it links to among those reached (each id is
    reached once), stopping after `limit` more ids; returns them and how many linked ids were left out."""
    reached: dict[int, list[int]] = {start: []}
    frontier, cut = [start], 0
    while frontier:
        following = []
        for node in frontier:
            for other in links(node):
                if other in reached:
                    reached[node].append(other)
                elif len(reached) <= limit:
                    reached[other] = []
                    reached[node].append(other)
                    following.append(other)
                else:
                    cut += 1
        frontier = following
    return reached, cut


def _tree(root: int, links: dict[int, list[int]], rows: dict[int, dict[str, Any]]) -> Node:
    """The walk as nested nodes; a candidate reached twice is shown again as a leaf marked `repeat`."""
    shown: set[int] = set()

    def node(cid: int) -> Node:
        row = rows.get(cid, {"id": cid, "label": f"#{cid}", "status": "unknown"})
        if cid in shown:
            return Node(row, repeat=True)
        shown.add(cid)
        return Node(row, [node(other) for other in links.get(cid, [])])

    return node(root)
