"""Novelty before training: how alike two networks' structures are, and a candidate's nearest archive member.

The functional hash (sandbox/runner.py) catches only a network that computes exactly what another
does; a copy with an extra `Dropout`, another initialisation or one constant changed computes
something else and would be trained again. The smoke run also records each network's structure
signature: how often each operator ran with each output shape in one eval-mode forward pass
(`FlopCount.structure`). Two signatures are compared as multisets, so a near-copy scores close to 1
and a width change, which alters the shapes of most operators, scores far below. The executor stops a
candidate whose nearest trained member is at least as similar as the run's `novelty_threshold`
before it pays for training (docs/sandbox.md, "Novelty before training").

In graph scoring the signatures are the host's, from the smoke stage's exported graph (agentarch/evaluation/graphs/
measures.py: ONNX operators, not the dispatcher's), and a candidate is compared only with members measured the same
way (`Archive.structures(..., scoring=)`): the two kinds share no token, and a trusted member's signature is its own
word. An eval-mode graph holds no dropout, so there two networks that differ only in dropout rates are near-copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Signature = Mapping[str, int]
"""A structure signature: token (operator name and output shapes, e.g. `addmm[1,32]`) -> how often it ran."""


def similarity(a: Signature, b: Signature) -> float:
    """Weighted Jaccard similarity of two signatures: the sum of each token's smaller count over the sum of its
    larger one. 1.0 for equal signatures, 0.0 when no token is shared (or both are empty)."""
    tokens = a.keys() | b.keys()
    larger = sum(max(a.get(t, 0), b.get(t, 0)) for t in tokens)
    if larger == 0:
        return 0.0
    return sum(min(a.get(t, 0), b.get(t, 0)) for t in tokens) / larger


def nearest(signature: Signature, members: Iterable[tuple[int, Signature]]) -> tuple[int, float] | None:
    """The member most similar to `signature` as (candidate id, similarity), the earliest id among equals;
    None when there are no members."""
    best: tuple[int, float] | None = None
    for member, other in members:
        score = similarity(signature, other)
        if best is None or score > best[1] or (score == best[1] and member < best[0]):
            best = (member, score)
    return best
