"""Red-team round 5: the features of a network of graphs (features.py's `mp.*`), the warm clean evaluator and the
smoke graph against its trained twin, attacked as a hostile candidate would.

The host reads a candidate's ONNX bytes for its measures and the predictor's features (the smoke stage's graph,
kept trained graphs) where no candidate code runs, so a graph that holds that read holds the loop, and a smoke
graph whose measures are not its trained twin's prices the training budget and screening on another network. The
attack graphs are built with onnx.helper and pass the host's checks (checks.py). Findings fixed: features.py's
per-aggregation walks (quadratic), sizes.py's unbounded integers, the digest blind to stored shapes
(measures.py) and to tied weights (scoring.trained_smoke)."""

from __future__ import annotations

import math
import os
import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agentarch.evaluation.graphs import measures
from agentarch.evaluation.graphs.checks import GraphRejected, check_graph
from agentarch.evaluation.graphs.features import graph_features
from agentarch.evaluation.graphs.measures import GraphMeasures
from agentarch.evaluation.graphs.scoring import (
    WORKER,
    GraphFailed,
    GraphScores,
    GraphWorker,
    believed,
    evaluator_launch,
    measure_graph,
    trained_smoke,
)
from agentarch.isolation.job import SandboxJob
from agentarch.isolation.warm import WarmSlot
from agentarch.tasks.registry import get_task
from tests.conftest import SPEC, assert_nothing_left
from tests.security.test_training_budget import MODES
from tests.test_warm_evaluator import LIMITS
from tests.test_warm_sandboxes import started

FEATURES = 4


def _many_scatters_one_chain(scatters: int, chain: int, *, into_chain: bool) -> bytes:
    """A node-classification graph of `scatters` sum aggregations along the edges and one chain of `chain` Identity
    nodes: after them all (`into_chain`: every aggregation's output is concatenated into the chain, which the
    mean-or-sum rule follows) or before them all (every aggregation's messages come from the chain's end, which the
    attention rule follows back to an Exp)."""
    stored = [
        numpy_helper.from_array(np.array([1, FEATURES], np.int64), "wide"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([FEATURES], np.int64), "end"),
    ]
    nodes = [
        helper.make_node("Gather", ["edge_index", "zero"], ["src_row"], axis=0),
        helper.make_node("Squeeze", ["src_row", "zero"], ["src"]),
        helper.make_node("Unsqueeze", ["src", "one"], ["src_column"]),
        helper.make_node("Expand", ["src_column", "wide"], ["index"]),
    ]
    last = "x"
    if not into_chain:
        nodes.append(helper.make_node("Exp", ["x"], ["exp"]))
        last = "exp"
        for i in range(chain):
            nodes.append(helper.make_node("Identity", [last], [f"chain{i}"]))
            last = f"chain{i}"
    nodes.append(helper.make_node("Gather", [last, "src"], ["messages"], axis=0))
    sums = [f"sum{i}" for i in range(scatters)]
    nodes += [
        helper.make_node("ScatterElements", ["x", "index", "messages"], [name], axis=0, reduction="add")
        for name in sums
    ]
    if into_chain:
        nodes.append(helper.make_node("Concat", sums, ["all"], axis=1))
        last = "all"
        for i in range(chain):
            nodes.append(helper.make_node("Identity", [last], [f"chain{i}"]))
            last = f"chain{i}"
        nodes.append(helper.make_node("Slice", [last, "zero", "end", "one"], ["y"]))
    else:
        nodes.append(helper.make_node("Sum", sums, ["y"]))
    graph = helper.make_graph(
        nodes,
        "attack",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["nodes", FEATURES]),
            helper.make_tensor_value_info("edge_index", TensorProto.INT64, [2, "edges"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["nodes", FEATURES])],
        stored,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _features_within(data: bytes, seconds: float) -> dict[str, float]:
    """The graph's features, or a failure if reading them holds the caller longer than `seconds`."""
    found: dict[str, object] = {}
    reader = threading.Thread(target=lambda: found.update(graph_features(data)), daemon=True)
    reader.start()
    reader.join(seconds)
    assert not reader.is_alive(), f"reading one graph's features held the host over {seconds} s"
    return found  # type: ignore[return-value]


@pytest.mark.parametrize("into_chain", [True, False], ids=["mean-or-sum walk", "attention walk"])
def test_many_aggregations_and_one_long_chain_are_read_in_linear_time(into_chain: bool) -> None:
    """Finding: the mean-or-sum rule walked forward from every aggregation, and the attention rule back from every
    one, so 5,000 aggregations and a chain of 5,000 Identity nodes cost 25 million steps (over a minute; the 100,000
    nodes the checks allow, over an hour) on the host, for the smoke graph of one candidate. Fixed in features.py
    (`_downstream`, and each tensor's first computing source found once): this test failed before the fix (the
    walk over 5,000 x 5,000 ran past the bound) and passes after. The rules still reach the far end of the chain:
    every aggregation is read as its Exp messages make it (attention) or as a sum (nothing divides after it)."""
    scatters = chain = 5000
    found = _features_within(_many_scatters_one_chain(scatters, chain, into_chain=into_chain), 15)
    assert found["graph.mp.aggregations"] == scatters
    assert found["graph.mp.attention"] == (0 if into_chain else scatters)
    assert found["graph.mp.sum"] == (scatters if into_chain else 0)
    assert found["graph.mp.mean"] == 0


def _image_model(nodes: list, stored: list, name: str, width: int) -> onnx.ModelProto:
    """An image network's graph as the runner exports one: `x` (batch, 64) in, `y` (batch, `width`) out, opset 18."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        stored,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def _fanned_out(copies: int, seed: int) -> onnx.ModelProto:
    """An image network of 64 features: its input copied `copies` times (an Expand whose shape is a stored int64
    tensor), each copy through one linear map of weights drawn from `seed`, the copies averaged: the same output
    whatever `copies`, and `copies` times the FLOPs."""
    stored = [
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
        numpy_helper.from_array(np.array([1, copies, 1], np.int64), "fan"),
        numpy_helper.from_array(np.random.default_rng(seed).standard_normal((64, 10)).astype(np.float32), "weight"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axis"], ["column"]),
        helper.make_node("Expand", ["column", "fan"], ["copies"]),
        helper.make_node("MatMul", ["copies", "weight"], ["mapped"]),
        helper.make_node("ReduceMean", ["mapped", "axis"], ["y"], keepdims=0),
    ]
    return check_graph(_image_model(nodes, stored, "fanned", 10).SerializeToString(), max_bytes=2**20)


def test_a_smoke_graph_that_inflates_its_flops_with_a_stored_shape_is_not_its_trained_twins_architecture() -> None:
    """Finding: the digest (one architecture, whatever the weights) left every stored tensor's values out, an
    Expand's int64 shape too, so a smoke graph that copies its input 4,096 times (4,096 times the FLOPs that price
    its training budget and fill its screening features) had the digest of the trained graph that copies it once,
    and the host took the second for the first. Fixed in measures.digest (each computed tensor's shape in its
    label): this test failed before the fix (equal digests) and passes after; the same network with other weights
    still shares its digest."""
    smoke, trained, retrained = _fanned_out(4096, 0), _fanned_out(1, 1), _fanned_out(1, 2)
    inflated, honest = measures.measure(smoke), measures.measure(trained)
    assert inflated.flops > 1000 * honest.flops
    assert inflated.digest != honest.digest
    assert measures.measure(retrained).digest == honest.digest


SIBLING = """
_B = __builtins__ if isinstance(__builtins__, dict) else __builtins__.__dict__
os, signal = _B["__import__"]("os"), _B["__import__"]("signal")
SCRATCH, PIDS = {scratch!r}, {pids!r}
tried = []

def attempt(name, fn):
    try:
        fn()
        tried.append(name + ":ESCAPED")
    except BaseException as err:
        tried.append(f"{{name}}:{{type(err).__name__}}")

def kill_all():
    for pid in PIDS:
        os.kill(pid, signal.SIGKILL)

attempt("write-graph", lambda: _B["open"](SCRATCH + "/graph.onnx", "wb").write(b"forged"))
attempt("write-probe", lambda: _B["open"](SCRATCH + "/probe_x.npy", "wb").write(b"forged"))
attempt("symlink", lambda: os.symlink("/etc/passwd", SCRATCH + "/probe_edge_index.npy"))
attempt("list", lambda: os.listdir(SCRATCH))
attempt("proc-cwd", lambda: [os.listdir(f"/proc/{{pid}}/cwd") for pid in PIDS])
attempt("kill", kill_all)
raise RuntimeError("REPORT " + " ".join(tried))
"""


@pytest.mark.parametrize("isolation", MODES)
def test_a_training_candidate_cannot_reach_the_warm_evaluator_started_beside_it(isolation, digits, own_jobs):
    """The clean evaluator that will score a candidate is started while the candidate trains, as the same user in
    the process mode. A candidate told its scratch path and its processes' ids (more than it can find: its own
    sandbox shows neither) tries to pre-write the graph and a probe file the host will `put` there, plant a symlink
    under a probe's name, list the scratch, read it through /proc/<pid>/cwd and kill the evaluator: every try fails,
    the evaluator still waits, none of those names in its scratch, and it then takes the host's graph as a warm one."""
    slot = WarmSlot("red-team")
    try:
        slot.order(evaluator_launch(digits, LIMITS, isolation))
        started(slot, WORKER)
        evaluator = slot._ready[WORKER][1]
        deadline = time.monotonic() + 30
        while not (pids := sorted(evaluator._members())) and time.monotonic() < deadline:
            time.sleep(0.05)  # launched; its processes join their cgroup as they start
        assert pids, "the evaluator's processes"
        code = SIBLING.format(scratch=str(evaluator.scratch), pids=pids)
        with SandboxJob(code, SPEC, digits.inputs_dir, LIMITS, isolation) as attacker:
            event = attacker.read_event(60)
        assert isinstance(event, dict) and "REPORT " in event.get("message", ""), event
        tried = event["message"].split("REPORT ", 1)[1].split()
        assert len(tried) == 6 and not any(t.endswith(":ESCAPED") for t in tried), (tried, pids)
        assert evaluator.waiting()
        planted = {"graph.onnx", "probe_x.npy", "probe_edge_index.npy"} & set(os.listdir(evaluator.scratch))
        assert not planted, planted
        with GraphWorker(digits, LIMITS, isolation, warm=slot) as worker:
            assert worker.warm_start
    finally:
        slot.close()
    assert_nothing_left(own_jobs)


def test_a_graph_claiming_a_graph_tasks_interface_is_read_so_only_for_features_and_scored_by_its_tasks_kind() -> None:
    """Attack: the features read a graph's kind from its input names (x, edge_index), so an image network can claim
    to be a network of graphs and get its scatters past the features' checks. It gets only that: the host's own
    checks of the graph, for its measures, its latency and its scores, hold it to its task's real kind (verify), so
    the smoke stage of an image task refuses it before any features are read."""
    claiming = _many_scatters_one_chain(1, 0, into_chain=True)
    assert graph_features(claiming)["graph.mp.aggregations"] == 1
    with pytest.raises(GraphFailed, match="ScatterElements, an operator outside the allowlist"):
        measure_graph(claiming, get_task("digits"), LIMITS)


def _squaring(squarings: int) -> onnx.ModelProto:
    """An image network of 64 features whose shape arithmetic squares 2 x the batch size `squarings` times (each
    Mul(v, v) doubles its digits), divides the result by itself and reshapes its input by that one times B: a
    linear map all the same."""
    stored = [
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([1], np.int64), "stop"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
        numpy_helper.from_array(np.array([64], np.int64), "width"),
        numpy_helper.from_array(np.zeros((64, 10), np.float32), "weight"),
    ]
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "start", "stop"], ["batch"]),
        helper.make_node("Mul", ["batch", "two"], ["v0"]),
        *(helper.make_node("Mul", [f"v{i}", f"v{i}"], [f"v{i + 1}"]) for i in range(squarings)),
        helper.make_node("Div", [f"v{squarings}", f"v{squarings}"], ["one"]),
        helper.make_node("Mul", ["one", "batch"], ["rows"]),
        helper.make_node("Concat", ["rows", "width"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("MatMul", ["flat", "weight"], ["y"]),
    ]
    return _image_model(nodes, stored, "squaring", 10)


def test_shape_arithmetic_that_squares_a_size_again_and_again_is_refused_at_once() -> None:
    """Finding: shapes.py follows shape values as Python integers (and monomials in the batch size), which have no
    bound, so a chain of N nodes that square a shape value made a number of 2**N bits: 32 nodes held the host 26 s
    (512 MiB) each time it measured the smoke graph and again for its features, 40 would take hours and 128 GiB.
    Fixed in sizes.py (`_make`: nothing beyond int64, ONNX's own type for shapes): this test failed before the fix
    (past the bound) and passes after: the measures refuse the graph, the features leave its sizes missing."""
    model = check_graph(_squaring(32).SerializeToString(), max_bytes=2**20)  # the host's checks pass it
    refused: list[BaseException] = []

    def measure() -> None:
        try:
            measures.measure(model)
        except GraphRejected as err:
            refused.append(err)

    reader = threading.Thread(target=measure, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "measuring one graph held the host over 10 s"
    assert refused and "beyond any tensor" in str(refused[0])
    found = _features_within(model.SerializeToString(), 10)
    assert math.isnan(found["graph.log_flops"]) and found["graph.linear"] == 1


def _two_maps(tied: bool) -> GraphMeasures:
    """Measures of an image network of two 64 x 64 linear maps, one weight read twice (`tied`) or two weights."""
    weight = np.ones((64, 64), np.float32)
    stored = [numpy_helper.from_array(weight, "first")]
    if not tied:
        stored.append(numpy_helper.from_array(2 * weight, "second"))
    nodes = [
        helper.make_node("MatMul", ["x", "first"], ["hidden"]),
        helper.make_node("MatMul", ["hidden", "first" if tied else "second"], ["y"]),
    ]
    return measures.measure(check_graph(_image_model(nodes, stored, "two", 64).SerializeToString(), max_bytes=2**20))


def test_a_smoke_graph_that_unties_its_trained_twins_weights_is_refused_after_training() -> None:
    """Finding: the digest names no tensor, so a network that reads one weight twice and one with two weights of
    that shape share it, and a smoke graph of two weights (twice the parameters that price the training budget)
    passed for its trained twin that ties them. Fixed in scoring.trained_smoke (the digest and the parameter count
    must both be the smoke graph's): this test failed before the fix (the trained record was believed) and passes
    after."""
    untied, tied = _two_maps(tied=False), _two_maps(tied=True)
    assert untied.digest == tied.digest and untied.params == 2 * tied.params
    smoke = believed({"event": "smoke", "params": 1}, untied)
    scored = GraphScores({}, None, "", np.zeros(1, np.float32), measures=tied)
    with pytest.raises(GraphFailed, match="not the network the smoke stage exported"):
        trained_smoke(smoke, scored)
    assert trained_smoke(believed({"event": "smoke"}, tied), scored)["params"] == tied.params
