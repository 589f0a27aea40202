"""Image restoration (`kind = "dense"`): the host's PSNR and SSIM against hand-computed values, task files from an
npz and from image folders (and the errors bad ones get), the built-in tasks' deterministic splits with their
targets kept host-only, the dense seeds against bicubic interpolation, and (slow) the seeds trained in the real
sandbox under both scoring modes and a baseline search of the restore space.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.tasks import dense, scoring, taskcheck, taskfiles
from agentarch.tasks.preparation import prepare
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import TaskError
from agentarch.web.app import create_app
from tests.conftest import REPO, requires_bubblewrap
from tests.web_client import Browser

SEEDS = sorted((REPO / "archive" / "seeds" / "dense").glob("*.py"))
C1, C2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2


def load_seed(path: Path) -> type[torch.nn.Module]:
    spec = importlib.util.spec_from_file_location(f"dense_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net


# -- metrics --------------------------------------------------------------------------------------------------------


def test_psnr_is_the_mean_over_images_of_ten_log10_one_over_mse():
    targets = np.zeros((2, 1, 4, 4), dtype=np.float32)
    outputs = np.stack([np.full((1, 4, 4), 0.1), np.full((1, 4, 4), 0.01)]).astype(np.float32)
    # MSE 0.01 -> 20 dB, MSE 0.0001 -> 40 dB
    assert dense.psnr(outputs, targets) == pytest.approx(30.0, abs=1e-5)
    assert dense.psnr(targets, targets) == dense.PSNR_CAP_DB  # exact: capped, not infinite
    assert dense.psnr(targets + 1.5, targets + 1.0) == dense.PSNR_CAP_DB  # outputs are clipped to [0, 1]


def test_ssim_of_constant_images_is_the_luminance_term_and_of_equal_images_one():
    a, b = np.full((1, 1, 12, 12), 0.2), np.full((1, 1, 12, 12), 0.4)
    assert dense.ssim(b, a) == pytest.approx((2 * 0.2 * 0.4 + C1) / (0.2**2 + 0.4**2 + C1), rel=1e-9)
    rng = np.random.default_rng(0)
    image = rng.random((3, 3, 9, 9))
    assert dense.ssim(image, image) == pytest.approx(1.0)


def test_ssim_matches_a_direct_computation_with_the_documented_window():
    rng = np.random.default_rng(1)
    ref = rng.random((1, 1, 12, 13))
    out = np.clip(ref + 0.1 * rng.standard_normal(ref.shape), 0, 1)
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    values = []
    for i in range(12 - 10):
        for j in range(13 - 10):
            x, y = out[0, 0, i : i + 11, j : j + 11], ref[0, 0, i : i + 11, j : j + 11]
            mx, my = (window * x).sum(), (window * y).sum()
            vx, vy = (window * x * x).sum() - mx**2, (window * y * y).sum() - my**2
            cov = (window * x * y).sum() - mx * my
            values.append(((2 * mx * my + C1) * (2 * cov + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    assert dense.ssim(out, ref) == pytest.approx(np.mean(values), rel=1e-9)
    assert len(dense.gaussian_window(7)) == 7  # an 8x8 image gets the largest odd window that fits
    assert 0 < dense.ssim(out[..., :8, :8], ref[..., :8, :8]) < 1


def test_the_host_refuses_restored_images_it_cannot_trust():
    task = get_task("digits-sr2")
    targets = np.zeros((3, 1, 16, 16), dtype=np.float32)
    assert scoring.output_shape(task, targets) == (3, 1, 16, 16)
    assert scoring.score(task, targets + 0.1, targets) == pytest.approx(20.0, abs=1e-5)
    assert set(scoring.secondary(task, targets, targets)) == {"ssim"}
    bad = targets.copy()
    bad[1, 0, 2, 3] = np.nan
    for outputs, message in (
        (bad, r"NaN or Inf \(first at index \(1, 0, 2, 3\)\)"),
        (targets[:, :, :8], "expected"),
        (targets.astype(np.int32), "must be floats"),
    ):
        with pytest.raises(TaskError, match=message):
            scoring.score(task, outputs, targets)


# -- the built-in tasks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits-sr2", "digits-denoise"])
def test_built_in_splits_are_deterministic_and_targets_stay_host_only(name, tmp_path):
    task = get_task(name)
    first, again = prepare(task, tmp_path / "a"), prepare(task, tmp_path / "b")
    other = prepare(task, tmp_path / "a", split_seed=1)
    for split in ("train", "val", "test"):
        x = np.load(first.inputs_dir / f"{split}_x.npy")
        np.testing.assert_array_equal(x, np.load(again.inputs_dir / f"{split}_x.npy"))
        assert x.dtype == np.float32 and x.shape[1:] == task.in_shape
    assert not np.array_equal(np.load(first.inputs_dir / "val_x.npy"), np.load(other.inputs_dir / "val_x.npy"))
    assert [len(np.load(first.inputs_dir / f"{s}_x.npy")) for s in ("train", "val", "test")] == [1077, 360, 360]
    assert sorted(p.name for p in first.inputs_dir.iterdir()) == [
        "meta.json",
        "test_x.npy",
        "train_x.npy",
        "train_y.npy",
        "val_x.npy",
    ]
    held_out = [first.labels(s) for s in ("val", "test")]
    for path in first.inputs_dir.iterdir():  # no held-out target hides under another name either
        if path.suffix == ".npy":
            stored = np.load(path)
            assert not any(stored.shape == y.shape and np.array_equal(stored, y) for y in held_out), path.name
    meta = json.loads((first.inputs_dir / "meta.json").read_text())
    assert meta["kind"] == "dense" and meta["out_shape"] == list(task.out_shape) and meta["mean"] == [0.0]


def test_the_built_in_inputs_are_the_documented_degradations(tmp_path):
    sr, noisy = prepare(get_task("digits-sr2"), tmp_path), prepare(get_task("digits-denoise"), tmp_path)
    y = np.load(sr.inputs_dir / "train_y.npy")
    np.testing.assert_allclose(np.load(sr.inputs_dir / "train_x.npy"), dense.downscale(y, 2), atol=1e-6)
    noise = np.load(noisy.inputs_dir / "train_x.npy") - np.load(noisy.inputs_dir / "train_y.npy")
    assert abs(noise.std() - dense.DIGITS_SIGMA) < 0.005 and abs(noise.mean()) < 0.005


# -- task files -----------------------------------------------------------------------------------------------------


def write_task(folder: Path, data: str, extra: str = "", name: str = "pairs") -> Path:
    path = folder / "task.toml"
    path.write_text(f'name = "{name}"\ndescription = "restore"\nkind = "dense"\n{extra}\n[data]\n{data}\n')
    return path


def check(path: Path, cache: Path) -> dict[str, str]:
    return dict(taskcheck.check(path, cache))


def test_a_task_file_from_an_npz_of_pairs_checks_and_prepares(tmp_path):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 256, (30, 3, 8, 8), dtype=np.uint8)
    inputs = (dense.downscale(targets / 255.0, 2) * 255).astype(np.uint8)
    np.savez(tmp_path / "pairs.npz", inputs=inputs, targets=targets)
    report = check(
        write_task(tmp_path, 'source = "npz"\npath = "pairs.npz"', "[splits]\nval = 0.2\ntest = 0.2"), tmp_path
    )
    assert report["input"].startswith("float32 (B, 3, 4, 4)")
    assert report["output"] == "restored images (B, 3, 8, 8) in [0, 1] (x2 super-resolution)"
    assert report["metric"] == "psnr (higher is better)" and report["splits"].startswith("train 18, val 6, test 6")
    task = taskfiles.load(tmp_path / "task.toml")
    assert task.out_shape == (3, 8, 8) and task.num_classes == 3 and task.kind == "dense"


def test_an_npz_that_names_its_splits_keeps_them(tmp_path):
    arrays = {}
    for split, n in (("train", 6), ("val", 3), ("test", 2)):
        arrays[f"{split}_inputs"] = np.full((n, 5, 5), 0.5, dtype=np.float32)
        arrays[f"{split}_targets"] = np.full((n, 5, 5), 0.25, dtype=np.float32)
    np.savez(tmp_path / "d.npz", **arrays)
    report = check(write_task(tmp_path, 'source = "npz"\npath = "d.npz"', 'metric = "ssim"'), tmp_path)
    assert report["splits"].startswith("train 6, val 3, test 2") and report["output"].endswith("(same size)")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((6, 4, 4)), "y": np.zeros((6, 8, 8))}, "expects inputs and targets"),
        ({"inputs": np.zeros((6, 4, 4)), "targets": np.zeros((6, 6, 6))}, "scaled by one whole factor"),
        ({"inputs": np.zeros((6, 4, 4)), "targets": np.full((6, 4, 4), 2.0)}, r"must lie in \[0, 1\]"),
        ({"inputs": np.zeros((6, 4, 4)), "targets": np.zeros((5, 4, 4))}, "has 6 images but targets 5"),
        ({"inputs": np.zeros((6, 1, 4, 4)), "targets": np.zeros((6, 3, 4, 4))}, "1 channel"),
        ({"inputs": np.zeros((6, 4, 4), dtype=np.int32), "targets": np.zeros((6, 4, 4))}, "uint8"),
    ],
)
def test_a_bad_npz_says_what_to_fix(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(TaskError, match=message):
        taskfiles.load(write_task(tmp_path, 'source = "npz"\npath = "bad.npz"'))


def save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_a_folder_of_clean_images_is_degraded_as_the_file_says(tmp_path):
    rng = np.random.default_rng(2)
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        for i in range(n):
            save_png(tmp_path / "photos" / split / f"{i}.png", rng.integers(0, 256, (12, 12), dtype=np.uint8))
    data = 'source = "images"\npath = "photos"\ndegradation = "downscale"\nfactor = 3'
    report = check(write_task(tmp_path, data), tmp_path / "cache")
    assert report["input"].startswith("float32 (B, 1, 4, 4)") and "x3 super-resolution" in report["output"]
    noisy = 'source = "images"\npath = "photos"\ndegradation = "noise"\nsigma = 0.2\n[input]\nchannels = 3\nheight = 6\nwidth = 6'
    report = check(write_task(tmp_path, noisy), tmp_path / "cache")
    assert report["input"].startswith("float32 (B, 3, 6, 6)") and report["output"].endswith("(same size)")
    assert report["splits"].startswith("train 4, val 2, test 2")


def test_a_folder_of_pairs_matches_inputs_and_targets_by_name(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(8):
        big = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        save_png(tmp_path / "pairs" / "targets" / f"{i:02}.png", big)
        save_png(tmp_path / "pairs" / "inputs" / f"{i:02}.png", big[::2, ::2])
    report = check(
        write_task(tmp_path, 'source = "images"\npath = "pairs"', "[splits]\nval = 0.25\ntest = 0.25"), tmp_path
    )
    assert report["input"].startswith("float32 (B, 3, 4, 4)") and report["output"].startswith(
        "restored images (B, 3, 8, 8)"
    )
    (tmp_path / "pairs" / "inputs" / "07.png").rename(tmp_path / "pairs" / "inputs" / "7.png")
    with pytest.raises(TaskError, match="only one side has 07.png, 7.png"):
        taskfiles.load(write_task(tmp_path, 'source = "images"\npath = "pairs"', "[splits]\nval = 0.25\ntest = 0.25"))


@pytest.mark.parametrize(
    "data, extra, message",
    [
        ('degradation = "downscale"', "", "data.factor: degradation 'downscale' takes factor"),
        ('degradation = "noise"\nfactor = 2', "", "data.sigma: degradation 'noise' takes sigma"),
        ("factor = 2", "", "data.degradation: name it"),
        ('degradation = "blur"', "", "data.degradation: Input should be 'downscale' or 'noise'"),
        ('degradation = "downscale"\nfactor = 4', "", "10x10 cannot be downscaled by 4"),
        ("", "", "no inputs/ folder; pairs live in inputs/ and targets/"),
        ('degradation = "downscale"\nfactor = 2', 'metric = "accuracy"', "metric: 'accuracy' does not score"),
    ],
)
def test_a_bad_image_folder_file_says_what_to_fix(tmp_path, data, extra, message):
    for i in range(6):
        save_png(tmp_path / "clean" / f"{i}.png", np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(TaskError, match=message):
        taskfiles.load(write_task(tmp_path, f'source = "images"\npath = "clean"\n{data}', extra))


def test_an_image_classification_file_may_not_degrade(tmp_path):
    path = tmp_path / "task.toml"
    path.write_text(
        'name = "c"\ndescription = "d"\nkind = "image"\n[data]\nsource = "images"\npath = "x"\nfactor = 2\n'
    )
    with pytest.raises(TaskError, match="only a dense task degrades its images"):
        taskfiles.parse(path)


# -- the seeds ------------------------------------------------------------------------------------------------------


def test_the_seeds_restore_images_of_any_factor_and_start_at_their_fixed_upsampling():
    from agentarch.evaluation.checks import check as static_check

    assert [p.stem for p in SEEDS] == ["upsample_cnn", "window_attention"]
    x = torch.rand(2, 3, 7, 9)
    for path in SEEDS:
        assert static_check(path.read_text()).ok
        for factor in (1, 2, 3):
            out = load_seed(path)((3, 7, 9), 3, out_shape=(3, 7 * factor, 9 * factor))(x)
            assert out.shape == (2, 3, 7 * factor, 9 * factor)
    cnn = load_seed(SEEDS[0])((3, 7, 9), 3, out_shape=(3, 14, 18)).eval()
    with torch.no_grad():  # the zero-initialised tail: the untrained network is exactly bicubic interpolation
        torch.testing.assert_close(cnn(x), F.interpolate(x, scale_factor=2, mode="bicubic"), atol=1e-5, rtol=0)


# -- in the real sandbox --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_task(tmp_path, cache_dir, monkeypatch) -> Path:
    """24 clean 8x8 images with smooth shapes (discs), downscaled by 2: small enough for a sandbox test."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:8, :8]
    centres = rng.uniform(1, 7, (24, 2))
    clean = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6.0) for cy, cx in centres]).astype(np.float32)
    np.savez(tmp_path / "discs.npz", inputs=dense.downscale(clean[:, None], 2), targets=clean[:, None])
    extra = "max_params = 200_000\n[train]\nepochs = 1\nbatch_size = 8\n[splits]\nval = 0.25\ntest = 0.25"
    return write_task(tmp_path, 'source = "npz"\npath = "discs.npz"', extra, name="tiny-discs")


@pytest.mark.slow
@requires_bubblewrap
@pytest.mark.parametrize("scoring_mode", ["trusted", "graph"])
def test_a_dense_seed_trains_end_to_end_in_the_sandbox(tiny_task, scoring_mode, cache_dir):
    args = ["eval", "--json", "--archive", "a.db", "--task", str(tiny_task), "--scoring", scoring_mode]
    result = CliRunner().invoke(app, [*args, *map(str, SEEDS)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["status"] for r in rows] == ["trained", "trained"], rows
    for row in rows:
        assert 10 < row["metrics"]["val_accuracy"] <= dense.PSNR_CAP_DB and math.isfinite(
            row["metrics"]["test_accuracy"]
        )
    db = sqlite3.connect("a.db")
    assert db.execute("SELECT metric, direction, kind FROM tasks WHERE name = 'tiny-discs'").fetchone() == (
        "psnr",
        "max",
        "dense",
    )
    for (timings,) in db.execute("SELECT timings FROM evaluations"):  # SSIM beside PSNR, computed on the host
        ssim = json.loads(timings)["secondary"]
        assert set(ssim) == {"val_ssim", "test_ssim"} and all(0 < v <= 1 for v in ssim.values()), ssim
    shown = CliRunner().invoke(app, ["archive", "show", "1", "--archive", "a.db"])
    assert shown.exit_code == 0 and "val_ssim=0." in shown.output, shown.output
    prepared = prepare(taskfiles.load(tiny_task), cache_dir)
    inputs = {p.name for p in prepared.inputs_dir.iterdir()}
    assert "val_y.npy" not in inputs and "test_y.npy" not in inputs
    assert sorted(p.name for p in prepared.train_dir.iterdir()) == ["meta.json", "train_x.npy", "train_y.npy"]


@pytest.mark.slow
@requires_bubblewrap
def test_a_baseline_search_of_the_restore_space_trains_its_candidates(tiny_task):
    args = ["baseline", "--algo", "random", "--task", str(tiny_task), "--budget", "2", "--json"]
    args += ["--archive", "b.db"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    db = sqlite3.connect("b.db")
    rows = db.execute(
        "SELECT c.space, e.status, e.val_accuracy FROM candidates c JOIN evaluations e ON e.candidate_id = c.id"
    )
    found = rows.fetchall()
    assert len(found) == 2 and all(space == "restore" and status == "trained" for space, status, _ in found), found
    assert all(val > 10 for _, _, val in found)


@pytest.mark.slow
@requires_bubblewrap
def test_the_built_in_digits_sr2_trains_through_an_offline_run_and_its_candidate_page_renders(
    tmp_path, cache_dir, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTARCH_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("AGENTARCH_THREADS", "1")
    args = ["run", "--task", "digits-sr2", "--budget", "1", "--epochs", "1", "--archive", "a.db", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["trained"] == 1, result.stdout
    (candidate, val), *_ = sqlite3.connect("a.db").execute(
        "SELECT c.id, e.val_accuracy FROM candidates c JOIN evaluations e ON e.candidate_id = c.id"
    )
    assert 10 < val <= dense.PSNR_CAP_DB  # nearest-neighbour upsampling alone scores 21.3 dB
    with Browser(create_app(tmp_path / "a.db")) as client:
        page = client.get(f"/candidate/{candidate}")
        assert page.status_code == 200 and "digits-sr2" in page.text and "psnr" in page.text.lower()
