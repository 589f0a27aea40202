"""Training checkpoints (issue 26): a resumed run's weights equal an uninterrupted run's bit for bit, in the trainer and
through fresh sandboxes, and an orchestrator killed mid-training costs a candidate at most one checkpoint interval."""

import json
import signal
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
import torch
from agentarch.runner import trainer
from agentarch.runner.checkpoint import CHECKPOINT_FILE, Resume, Saver
from torch import nn
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.evaluation.checkpoints import Checkpoint
from agentarch.evaluation.stages import RunRequest, stages
from agentarch.isolation.policy import Limits, resolve_isolation
from agentarch.store.archive import Archive
from tests.conftest import REPO
from tests.scripted import start_run

MLP = (REPO / "archive" / "seeds" / "image" / "mlp.py").read_text()


class Killed(Exception):
    """Stands for the job's death right after a checkpoint was written."""


def inputs() -> trainer.Inputs:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 10, generator=gen), torch.randint(0, 3, (200,), generator=gen)
    return trainer.Inputs("table", x, y, x[:20], x[:20])


def net() -> nn.Module:
    torch.manual_seed(0)  # dropout and batch norm: the generators and the buffers must come back too
    return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def test_a_resumed_training_ends_with_the_uninterrupted_weights_bit_for_bit():
    cfg = trainer.TrainConfig(epochs=6, batch_size=32, lr=0.01, weight_decay=0.01, seed=0)
    cpu = torch.device("cpu")
    trainer.seed_everything(0)
    uninterrupted = net()
    whole = trainer.train(uninterrupted, inputs(), cfg, cpu)

    folder, said = Path(tempfile.mkdtemp()), []

    def emit(event):
        said.append(event)
        if event["epoch"] == 3:
            raise Killed

    trainer.seed_everything(0)
    with pytest.raises(Killed):
        trainer.train(net(), inputs(), cfg, cpu, Saver(folder, 0.0, emit))
    assert [e["epoch"] for e in said] == [1, 2, 3] and said[-1]["step"] == 18  # 6 batches an epoch
    trainer.seed_everything(7)  # the fresh process's own state does not matter: the checkpoint's comes back
    resumed = net()
    rest = trainer.train(resumed, inputs(), cfg, cpu, resume=Resume.load(folder / CHECKPOINT_FILE))
    assert uninterrupted.state_dict().keys() == resumed.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted.state_dict().values(), resumed.state_dict().values()))
    assert rest.curve == whole.curve and rest.steps == whole.steps == 36


def request(cache_dir: Path, **extra) -> RunRequest:
    return RunRequest(
        code=MLP,
        task="digits",
        train={"epochs": 4, "batch_size": 64, "lr": 3e-3, "weight_decay": 0.0, "seed": 0, "max_seconds": 60},
        limits=Limits(timeout_s=120, smoke_timeout_s=60, threads=1),
        isolation=resolve_isolation("auto"),
        cache_dir=cache_dir,
        data_dir=None,
        split_seed=0,
        scoring="graph",  # the trained graph carries the weights: equal bytes, equal weights
        budget_slack=4.0,
        **extra,
    )


@pytest.mark.slow
def test_a_job_cut_after_a_checkpoint_continues_in_a_fresh_sandbox_to_the_same_trained_graph(cache_dir, digits):
    *_, uninterrupted = stages(request(cache_dir))
    cut = stages(request(cache_dir, checkpoint_s=0.0))
    taken = next(item for item in cut if isinstance(item, Checkpoint))  # a fast epoch's may be replaced unread: the
    cut.close()  # host reads the newest; then the job is killed, its sandbox gone
    assert 1 <= taken.epoch <= 3
    resumed = list(stages(request(cache_dir, checkpoint_s=0.0, resume=taken.data)))
    final = resumed[-1]
    assert {c.epoch for c in resumed if isinstance(c, Checkpoint)} <= set(range(taken.epoch + 1, 4))
    assert final.status == uninterrupted.status == "trained", final.error
    assert final.graph == uninterrupted.graph and final.scores == uninterrupted.scores
    assert final.trained["curve"] == uninterrupted.trained["curve"]
    assert final.trained["resumed_epoch"] == taken.epoch
    steps = uninterrupted.trained["host"]["budget"]["steps_granted"]
    assert final.trained["host"]["budget"]["steps_granted"] == steps // 4 * (4 - taken.epoch)  # the steps left


def kept_epochs(archive: Path) -> list[int]:
    """The epochs of the checkpoints kept beside the archive (read from each file's header)."""
    found = []
    for path in Path(f"{archive}.resumes").glob("*/*.safetensors"):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # replaced just now
            continue
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        found.append(json.loads(header["__metadata__"]["agentarch"])["epoch"])
    return found


@pytest.mark.slow
def test_an_orchestrator_killed_mid_training_costs_at_most_one_checkpoint_interval(tmp_path, cache_dir, digits):
    archive, epochs = tmp_path / "a.db", 12
    args = ("--budget", "1", "--epochs", str(epochs))
    env = {"AGENTARCH_CHECKPOINT_S": "0"}  # a checkpoint every epoch: the interval is one epoch
    victim = start_run(archive, *args, cache_dir=cache_dir, **env)
    deadline, seen = time.time() + 240, []
    while time.time() < deadline and max(seen, default=0) < 3 and victim.poll() is None:
        time.sleep(0.05)
        seen = kept_epochs(archive)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert max(seen, default=0) >= 3, "the run ended or stalled before its third checkpoint"
    at_kill = max(kept_epochs(archive))
    run_id = sqlite3.connect(archive).execute("SELECT id FROM runs").fetchone()[0]
    resumed = start_run(archive, "--resume", run_id, cache_dir=cache_dir, **env)
    out, errors = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, errors
    assert json.loads(out.splitlines()[-1])["trained"] == 1
    with Archive(archive) as db:
        (candidate,) = db.db.execute("SELECT id FROM candidates").fetchall()
        (evaluation,) = [e for e in db.evaluations(candidate[0])]
    timings = evaluation["timings"]
    # the new job went on from the latest checkpoint kept when the orchestrator died: what the kill cost is the
    # training done since, less than one interval (one epoch); nothing before it was trained again
    assert timings["resumed_epoch"] == at_kill >= 3
    assert timings["epochs_done"] == epochs
    assert timings["budget"]["steps_granted"] == (epochs - at_kill) * timings["steps"] // epochs
    assert not list(Path(f"{archive}.resumes").glob("*/*"))  # recorded: its checkpoint is gone
    shown = CliRunner().invoke(app, ["archive", "show", str(candidate[0]), "--archive", str(archive)])
    assert f"resumed at epoch {at_kill}" in " ".join(shown.output.split()), shown.output
