"""Take the model home (issue 25): each trained candidate's graph kept beside the archive under a retention policy,
`agentarch export ID --out DIR`, and the candidate page's downloads.

The last test trains the seed MLP on digits through the real sandbox with graph scoring, exports it with the CLI, and
runs the exported file with onnxruntime outside agentarch: it gives the recorded test score exactly.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.config import Settings
from agentarch.evaluation.evaluator import Evaluator
from agentarch.store import bundle
from agentarch.store.archive import Archive
from agentarch.store.graphs import NOT_KEPT, GraphNotKept, GraphPolicy
from agentarch.store.handle import ArchiveError
from agentarch.web import create_app
from tests.conftest import REPO, requires_bubblewrap
from tests.web_client import Browser

MLP = (REPO / "archive" / "seeds" / "image" / "mlp.py").read_text()
GRAPH_TIMINGS = {"scoring": "graph", "graph": {"latency_ms": 0.05, "graph_bytes": 100, "export_seconds": 0.3}}


def candidate(name: str, tag: str, **extra) -> dict:
    return {
        "task": "digits",
        "name": name,
        "proposer": "user",
        "code": f"# {name}\nx = 1\n",
        "status": "trained",
        "text_hash": tag,
        "ast_hash": tag,
        "parents": [],
        "params": 1234,
        "flops": 5678,
        **extra,
    }


def evaluation(val: float, graph: str | None = None, **extra) -> dict:
    return {
        "status": "trained",
        "fidelity": 3,
        "seed": 0,
        "val_accuracy": val,
        "test_accuracy": val - 0.01,
        "train_seconds": 1.5,
        "device": "cpu",
        "isolation": "bubblewrap",
        "timings": GRAPH_TIMINGS if graph else {"train_seconds": 1.5},
        "graph_sha256": graph,
        **extra,
    }


def export(*args: str):
    return CliRunner().invoke(app, ["export", *args])


@pytest.fixture
def db(tmp_path):
    with Archive(tmp_path / "a.db") as archive:
        yield archive


# -- the graphs folder ----------------------------------------------------------------------------------------------


def test_a_graph_is_kept_by_its_sha256_and_read_back_checked(db):
    digest = db.keep_graph(b"graph one")
    assert digest == hashlib.sha256(b"graph one").hexdigest()
    path = db.graphs_dir / f"{digest}.onnx"
    assert path.read_bytes() == b"graph one" and db.graphs_dir == db.path.with_name("a.db.graphs")
    assert db.keep_graph(b"graph one") == digest and len(list(db.graphs_dir.iterdir())) == 1  # stored once
    assert db.graph_bytes(digest) == b"graph one"
    with pytest.raises(ArchiveError, match="larger than 4 bytes"):
        db.graph_bytes(digest, limit=4)
    path.write_bytes(b"graph two")  # changed behind the archive's back
    with pytest.raises(ArchiveError, match="does not hold what its name says"):
        db.graph_bytes(digest)
    path.unlink()
    with pytest.raises(GraphNotKept, match=re.escape(NOT_KEPT)):
        db.graph_bytes(digest)
    with pytest.raises(ArchiveError, match="not a graph's sha256"):
        db.graph_bytes("../a.db")


def test_retention_keeps_the_top_k_per_task_by_its_direction_and_pinned_and_flagged(db, tmp_path):
    """Over the cap, every graph outside the keep set goes at once; the rows keep their hash; a graph no row names yet
    (being recorded now) is spared."""
    graphs = {}
    for i, val in enumerate([0.5, 0.9, 0.7, 0.6, 0.8, 0.4]):  # digits: higher is better
        graphs[val] = db.keep_graph(bytes([i]) * 1000, GraphPolicy(keep_top=2, max_mb=1))
        db.record(candidate(f"c{i}", f"h{i}"), evaluation(val, graphs[val]))
    bpb = {}
    db.db["tasks"].insert({"name": "bytes", "metric": "bpb", "direction": "min", "created_at": "now"})
    for i, val in enumerate([2.0, 1.0, 3.0]):  # bits per byte: lower is better
        bpb[val] = db.keep_graph(bytes([100 + i]) * 1000)
        db.record(candidate(f"b{i}", f"b{i}", task="bytes"), evaluation(val, bpb[val]))
    pinned, flagged = graphs[0.4], graphs[0.5]
    db.pin_graph(pinned, 6, "exported")
    db.flag(1, by="ana", reason="suspicious")
    fresh = db.keep_graph(b"not recorded yet" * 100, GraphPolicy(keep_top=2, max_mb=1))  # under the cap: nothing goes
    assert db.graphs_size() == 9 * 1000 + 1600

    dropped = db.retain_graphs(GraphPolicy(keep_top=2, max_mb=0.001))
    assert set(dropped) == {graphs[0.7], graphs[0.6], bpb[3.0]}
    assert {p.stem for p in db.graphs_dir.iterdir()} == {
        graphs[0.9],
        graphs[0.8],
        bpb[1.0],
        bpb[2.0],
        pinned,
        flagged,
        fresh,
    }
    assert db.evaluations(3)[0]["graph_sha256"] == graphs[0.7]  # the hash stays, the file is gone
    made = bundle.bundle(db, 3)
    assert not made.graph_kept and made.graph_note == NOT_KEPT
    assert f"No `model.onnx`: {NOT_KEPT}" in made.files["MODEL_CARD.md"].decode()
    assert db.retain_graphs(GraphPolicy(keep_top=2, max_mb=1)) == []  # under the cap again


# -- agentarch export -----------------------------------------------------------------------------------------------


@pytest.fixture
def filled(tmp_path):
    """An archive with a verified candidate (a child, with a graph), its trusted parent, and an untrained one."""
    path = tmp_path / "a.db"
    with Archive(path) as db:
        run = db.start_run("eval", "digits", "user", {"split_seed": 3})
        parent = db.record(candidate("seed](http://evil)\n# heading <b>", "p"), evaluation(0.8, latency_ms=2.0))
        graph = db.keep_graph(b"an onnx graph")
        child = db.record(candidate("child.py", "c", run_id=run, parents=[parent]), evaluation(0.9, graph))
        failed = db.record(candidate("broken.py", "f", status="failed"), {"status": "failed", "error": "boom"})
    return path, parent, child, failed, graph


def test_export_writes_the_code_the_graph_and_a_card_that_says_what_the_model_is(filled, tmp_path):
    path, parent, child, _, graph = filled
    out = tmp_path / "home"
    result = export(str(child), "--out", str(out), "--archive", str(path), "--json")
    assert result.exit_code == 0, result.output
    said = json.loads(result.stdout)
    assert (
        said["verified"]
        and said["graph_sha256"] == graph
        and set(said["files"]) == {"model.py", "model.onnx", "MODEL_CARD.md"}
    )
    assert (out / "model.onnx").read_bytes() == b"an onnx graph"
    assert (out / "model.py").read_text() == "# child.py\nx = 1\n"
    card = (out / "MODEL_CARD.md").read_text()
    assert "**Verified.**" in card and "UNVERIFIED" not in card
    for fact in (
        "| validation accuracy | 0.9000 |",
        "| test accuracy | 0.8900 |",
        "| parameters | 1,234",
        "| FLOPs | 5,678",
    ):
        assert fact in card
    assert "0.050 ms for one example, ONNX Runtime" in card
    assert f"- parents: {parent} (seed\\]\\(http://evil\\) \\# heading \\<b\\>)" in card  # escaped, on one line
    assert (
        "AGENTARCH_SCORING=graph AGENTARCH_SPLIT_SEED=3 agentarch eval model.py --task digits --seed 0 --epochs 3"
        in card
    )
    for name in ("model.py", "model.onnx"):
        assert f"{hashlib.sha256((out / name).read_bytes()).hexdigest()}  {name}" in card
    with Archive(path) as db:  # exported: kept whatever the policy says from now on
        assert graph in db.graphs_to_keep(GraphPolicy(keep_top=0))


def test_a_trusted_candidate_exports_without_a_graph_and_its_card_says_unverified(filled, tmp_path):
    path, parent, *_ = filled
    result = export(str(parent), "--out", str(tmp_path / "home"), "--archive", str(path))
    assert result.exit_code == 0, result.output
    assert "UNVERIFIED" in result.stdout and "no model.onnx" in result.stdout
    written = f"candidate {parent} written to {tmp_path / 'home'}: "  # one line with the whole path, to copy
    assert any(line.startswith(written) for line in result.stdout.splitlines()), result.stdout
    card = (tmp_path / "home" / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# Candidate {parent}: seed\\]\\(http://evil\\) \\# heading \\<b\\>\n")
    assert "**⚠ UNVERIFIED: trusted scoring.**" in card and "| scoring | **trusted (unverified)** |" in card
    assert not (tmp_path / "home" / "model.onnx").exists()


def test_export_refuses_with_reasons(filled, tmp_path):
    path, parent, child, failed, _ = filled
    unknown = export("999", "--out", str(tmp_path / "x"), "--archive", str(path))
    assert unknown.exit_code == 2 and "no candidate with id 999" in unknown.output
    untrained = export(str(failed), "--out", str(tmp_path / "x"), "--archive", str(path))
    assert untrained.exit_code == 2 and "has no trained evaluation (it is failed)" in untrained.output
    no_archive = export(str(child), "--out", str(tmp_path / "x"), "--archive", str(tmp_path / "none.db"))
    assert no_archive.exit_code == 2 and "no archive at" in no_archive.output
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "x").exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    refused = export(str(child), "--out", str(full), "--archive", str(path))
    assert refused.exit_code == 2 and "exists and is not empty" in refused.output and "--force" in refused.output
    assert export(str(child), "--out", str(full), "--archive", str(path), "--force").exit_code == 0
    assert (full / "model.onnx").exists() and (full / "mine.txt").read_text() == "keep me"
    forced = export(str(parent), "--out", str(full), "--archive", str(path), "--force")  # no graph: none left behind
    assert forced.exit_code == 0 and not (full / "model.onnx").exists()


def test_export_help_teaches():
    result = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for taught in ("model.onnx", "MODEL_CARD.md", "graph not kept (retention policy)", "UNVERIFIED", "--force"):
        assert taught in result.stdout, taught


# -- the web --------------------------------------------------------------------------------------------------------


def test_the_candidate_page_links_the_graph_and_the_bundle_and_marks_trusted_scores(filled):
    path, parent, child, failed, graph = filled
    with Browser(create_app(path)) as client:
        page = client.get(f"/candidate/{child}").text
        assert f'href="/candidate/{child}/model.onnx"' in page and f'href="/candidate/{child}/export.zip"' in page
        assert 'id="unverified"' not in page and "graph (verified)" in page
        trusted = client.get(f"/candidate/{parent}").text
        assert 'id="unverified"' in trusted and "trusted (unverified)" in trusted
        assert f'href="/candidate/{parent}/model.onnx"' not in trusted and f"/candidate/{parent}/export.zip" in trusted
        assert 'id="take-home"' not in client.get(f"/candidate/{failed}").text

        onnx = client.get(f"/candidate/{child}/model.onnx")
        assert onnx.status_code == 200 and onnx.content == b"an onnx graph"
        assert onnx.headers["content-disposition"] == f'attachment; filename="candidate-{child}.onnx"'
        assert onnx.headers["x-content-type-options"] == "nosniff"
        zipped = client.get(f"/candidate/{child}/export.zip")
        assert zipped.headers["content-disposition"] == f'attachment; filename="candidate-{child}-export.zip"'
        with zipfile.ZipFile(io.BytesIO(zipped.content)) as z:
            assert sorted(z.namelist()) == [
                f"candidate-{child}/{n}" for n in ("MODEL_CARD.md", "model.onnx", "model.py")
            ]
            assert z.read(f"candidate-{child}/model.onnx") == b"an onnx graph"
            card = z.read(f"candidate-{child}/MODEL_CARD.md")
        with Archive(path) as db:  # the same files the CLI writes, and the download pinned nothing
            assert card == bundle.bundle(db, child).files["MODEL_CARD.md"]
            assert db.db.execute("SELECT COUNT(*) FROM graph_pins").fetchone()[0] == 0

        assert client.get(f"/candidate/{parent}/model.onnx").status_code == 404
        assert client.get(f"/candidate/{failed}/export.zip").status_code == 404
        assert client.post(f"/candidate/{child}/model.onnx").status_code in (403, 405)  # GET only
        with Archive(path) as db:
            (db.graphs_dir / f"{graph}.onnx").unlink()
        gone = client.get(f"/candidate/{child}/model.onnx")
        assert gone.status_code == 404 and NOT_KEPT in gone.text
        assert NOT_KEPT in client.get(f"/candidate/{child}").text
    with Browser(create_app(path), base_url="http://attacker.example") as outsider:  # the guard is in front
        assert outsider.get(f"/candidate/{child}/export.zip").status_code == 400


# -- the whole way, through the real sandbox --------------------------------------------------------------------------


@pytest.mark.slow
@requires_bubblewrap
def test_the_exported_graph_reproduces_the_recorded_test_score_outside_agentarch(tmp_path, cache_dir, digits):
    import onnxruntime as ort

    archive = tmp_path / "a.db"
    settings = Settings(archive=archive, cache_dir=cache_dir, task="digits", epochs=3, isolation="bubblewrap")
    with Archive(archive) as db:
        result = Evaluator(db, settings, scoring="graph").evaluate(MLP, "mlp.py")
        assert result.status == "trained", result.reason
        recorded = db.evaluations(result.id)[0]
    assert recorded["graph_sha256"] and recorded["timings"]["scoring"] == "graph"

    out = tmp_path / "home"
    done = export(str(result.id), "--out", str(out), "--archive", str(archive), "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["verified"] is True

    # Outside agentarch: numpy and onnxruntime on the exported file and the task's prepared test inputs, normalised as
    # the trainer does ((x / scale - mean[c]) / std[c], in float32), scored against the held-out labels.
    meta = json.loads((digits.inputs_dir / "meta.json").read_text())
    x = np.load(digits.inputs_dir / "test_x.npy").astype(np.float32)
    x /= np.float32(meta["scale"])
    x -= np.asarray(meta["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    x /= np.asarray(meta["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    accuracy = float((logits.argmax(axis=1) == digits.labels("test")).mean())
    assert accuracy == recorded["test_accuracy"]  # exactly
    assert f"| test accuracy | {recorded['test_accuracy']:.4f} |" in (out / "MODEL_CARD.md").read_text()
    assert hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest() == recorded["graph_sha256"]


def test_a_table_answer_is_neither_verified_nor_unverified(db, tmp_path):
    table = evaluation(0.93, isolation="table", device="nas-bench-201", fidelity=200)
    found = db.record(candidate("cell", "t", task="nb201-cifar10"), table)
    card = bundle.bundle(db, found).files["MODEL_CARD.md"].decode()
    assert "**A benchmark table's answer.**" in card and "UNVERIFIED" not in card and "Verified" not in card
    assert "agentarch eval model.py --task TASK" in card
    with Browser(create_app(db.path)) as client:
        page = client.get(f"/candidate/{found}").text
        assert 'id="unverified"' not in page and "the benchmark table's answer" in page
