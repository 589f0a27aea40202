"""Novelty before training: the structure signature, its similarity, its parsing, and a near-copy stopped
before training in a real sandbox."""

from __future__ import annotations

import json

import pytest
import torch
from agentarch.runner.runner import FlopCount, trace
from torch import nn

from agentarch.config import Settings, load_settings
from agentarch.evaluation.evaluator import Evaluator
from agentarch.evaluation.novelty import nearest, similarity
from agentarch.isolation.protocol import MAX_STRUCTURE_TOKENS, MAX_TOKEN_CHARS, MAX_TOKEN_COUNT, parse_event
from agentarch.store.archive import Archive

DEFAULT = Settings.model_fields["novelty_threshold"].default


def test_similarity_is_the_weighted_jaccard_of_the_counts():
    a, b = {"relu": 2, "addmm": 2}, {"relu": 1, "addmm": 2, "gelu": 1}
    assert similarity(a, b) == similarity(b, a) == (1 + 2) / (2 + 2 + 1)
    assert similarity(a, dict(a)) == 1.0
    assert similarity(a, {"conv": 3}) == 0.0
    assert similarity({}, {}) == 0.0


def test_nearest_is_the_most_similar_member_and_the_earliest_among_equals():
    sig = {"a": 1, "b": 1}
    assert nearest(sig, []) is None
    assert nearest(sig, [(5, {"a": 1}), (3, {"a": 1, "b": 1}), (2, {"a": 1, "b": 1}), (9, {"c": 1})]) == (2, 1.0)
    assert nearest(sig, [(7, {"c": 1}), (4, {"b": 1})]) == (4, 0.5)


class Mlp(nn.Module):
    """A digits MLP with the knobs the measurements turn: width, activation, dropout, kernel of a conv stem,
    init constant."""

    def __init__(self, width=32, act=nn.ReLU, dropout=0.0, kernel=3, init=None, scale=None):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(1, 4, kernel, padding=kernel // 2)
        self.fc1, self.act, self.fc2 = nn.Linear(4 * 64, width), act(), nn.Linear(width, 10)
        self.drop = nn.Dropout(dropout)
        self.scale = scale
        if init is not None:
            nn.init.constant_(self.fc1.bias, init)

    def forward(self, x):
        h = self.act(self.fc1(self.stem(x).flatten(1)))
        if self.scale is not None:
            h = h * self.scale
        return self.fc2(self.drop(h))


def signature(**settings) -> dict[str, int]:
    return trace(Mlp(**settings).eval(), torch.randn(2, 1, 8, 8)).structure()


@pytest.mark.parametrize(
    "change, low, high",
    [
        ({"init": 0.01}, 1.0, 1.0),  # constants and initialisation leave no trace in the forward pass
        ({"dropout": 0.0}, 1.0, 1.0),  # Dropout(0.0) is no change at all
        ({"scale": 0.5}, 0.8, 0.95),  # one multiply more, on a dozen operators
        ({"dropout": 0.2}, 0.8, 0.95),  # a dropout rate trains differently (as in the functional hash)
        ({"act": nn.GELU}, 0.6, 0.95),
        ({"kernel": 5}, 0.6, 0.95),  # same output shapes, another weight shape
        ({"width": 33}, 0.0, 0.5),  # a width change alters every shape downstream
    ],
)
def test_cosmetic_changes_score_one_and_real_ones_fall_below_the_default(change, low, high):
    """The measured table in docs/sandbox.md, on a network small enough to run here: what the default rejects."""
    score = similarity(signature(), signature(**change))
    assert low <= score <= high, score
    assert (score >= DEFAULT) == (low == 1.0)


def test_a_changed_constant_is_the_same_structure():
    assert signature(scale=0.5) == signature(scale=0.7)


def test_the_runner_bounds_what_it_sends_and_the_host_keeps_it():
    counter = FlopCount()
    counter.tokens.update({f"op{i}": 1 for i in range(1000)})
    counter.tokens["x" * 500] = 5
    counter.tokens["y" * 500] = 4
    counter.tokens["busy"] = 10**9
    sent = counter.structure()
    assert len(sent) == MAX_STRUCTURE_TOKENS and sent["busy"] == MAX_TOKEN_COUNT
    long = [token for token in sent if token.startswith(("x", "y"))]
    assert len(long) == 2 and all(len(token) == MAX_TOKEN_CHARS for token in long)  # a digest keeps them apart
    event = parse_event(json.dumps({"event": "smoke", **SMOKE, "structure": sent}).encode())
    assert event["structure"] == sent


SMOKE = {"functional_hash": "0" * 64, "params": 10, "flops": 20, "seconds": 0.5}


@pytest.mark.parametrize(
    "bad",
    [
        [["relu", 1]],
        "relu",
        {"relu": -1},
        {"relu": 0},
        {"relu": 1.5},
        {"relu": True},
        {"relu": "1"},
        {"relu": MAX_TOKEN_COUNT + 1},
        {"relu": {"nested": 1}},
        {"": 1},
        {"x" * (MAX_TOKEN_CHARS + 1): 1},
        {f"op{i}": 1 for i in range(MAX_STRUCTURE_TOKENS + 1)},
    ],
)
def test_a_bad_signature_is_dropped_and_the_event_kept(bad):
    event = parse_event(json.dumps({"event": "smoke", **SMOKE, "structure": bad}).encode())
    assert "structure" not in event and event["params"] == 10


def test_the_archive_offers_the_best_and_the_most_recent_trained_structures(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        ids = []
        for i, val in enumerate([0.9, 0.5, 0.95, 0.1, 0.2]):
            row = {"task": "digits", "proposer": "user", "code": f"x = {i}", "status": "trained", "parents": []}
            evaluation = {"status": "trained", "fidelity": 1, "val_accuracy": val}
            ids.append(db.record({**row, "structure": {f"op{i}": 1}}, evaluation))
        db.record({"task": "digits", "proposer": "user", "code": "f", "status": "failed", "structure": {"op": 1}})
        db.record({"task": "digits", "proposer": "user", "code": "old", "status": "trained"})  # before schema 12
        db.record({"task": "other", "proposer": "user", "code": "o", "status": "trained", "structure": {"op": 1}})
        assert db.structures("digits", limit=4) == [
            (ids[2], {"op2": 1}),  # the best two by validation
            (ids[0], {"op0": 1}),
            (ids[4], {"op4": 1}),  # then the most recent
            (ids[3], {"op3": 1}),
        ]
        assert [member for member, _ in db.structures("digits")] == [ids[2], ids[0], ids[1], ids[4], ids[3]]
        assert db.structures("nothing") == []
        assert db.candidate(ids[0])["structure"] == {"op0": 1}


MLP = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, num_classes):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))
"""
# Near-copies that compute something else (so the functional hash does not catch them): another initial bias,
# and a Dropout(0.0) (the functional hash counts dropout rates).
INIT = "self.fc2 = nn.Linear(32, num_classes)\n        nn.init.constant_(self.fc1.bias, 0.05)"
NEW_INIT = MLP.replace("self.fc2 = nn.Linear(32, num_classes)", INIT)
NO_OP_DROPOUT = MLP.replace(
    "self.fc2 = nn.Linear(32, num_classes)",
    "self.fc2 = nn.Linear(32, num_classes)\n        self.drop = nn.Dropout(0.0)",
).replace(
    "return self.fc2(torch.relu(self.fc1(x.flatten(1))))",
    "return self.fc2(self.drop(torch.relu(self.fc1(x.flatten(1)))))",
)


def test_a_near_copy_is_stopped_before_training_with_the_member_it_copies(tmp_path, cache_dir, digits):
    settings = load_settings(task="digits", epochs=1, threads=1, cache_dir=cache_dir, archive=tmp_path / "a.db")
    with Archive(settings.archive) as db:
        evaluator = Evaluator(db, settings)
        first = evaluator.evaluate(MLP, "mlp.py")
        assert first.status == "trained", first.reason
        assert db.candidate(first.id)["structure"]  # kept from the smoke run
        for name, code in (("new_init.py", NEW_INIT), ("no_op_dropout.py", NO_OP_DROPOUT)):
            copy = evaluator.evaluate(code, name)
            assert (copy.status, copy.dedup_level, copy.duplicate_of) == ("duplicate", "structural", first.id), copy
            assert copy.reason == f"[novelty] a near-copy of candidate {first.id} (structural similarity 1.000 ≥ 0.99)"
            assert copy.metrics["train_seconds"] is None and db.evaluations(copy.id) == []  # never trained
            recorded = db.candidate(copy.id)
            assert recorded["functional_hash"] != db.candidate(first.id)["functional_hash"]
            assert recorded["structure"] == db.candidate(first.id)["structure"]
        wider = evaluator.evaluate(MLP.replace("32", "48"), "wider.py")
        assert wider.status == "trained" and wider.dedup_level is None, wider.reason
        assert evaluator.reevaluate(first.id, 1).status == "trained"  # a member is no copy of itself
        off = Evaluator(db, settings.model_copy(update={"novelty_threshold": 1.0}))
        assert off.evaluate(NEW_INIT.replace("0.05", "0.07"), "off.py").status == "trained"
