"""Image restoration (`kind = "dense"`): the metrics the host scores a restored image by (PSNR, SSIM), the
degradations that turn clean images into a task's inputs (area downscaling by a factor, Gaussian noise), and the
built-in tasks' data (digits-sr2, digits-denoise).

Stored formats: inputs are float32 (N, C, h, w) and targets float32 (N, C, H, W), pixel values in [0, 1] (a
noisy input may stray outside it; a target may not). Only the training targets enter the sandbox, as `train_y`:
the validation and test targets stay in the host's labels folder like any task's labels (preparation.py).

Its own module because a restored image is scored and checked unlike a class or a value: the metrics, the
degradations and the stored-format checks of one kind belong together, and scoring, preparation, built-in tasks and
task files all ask it. It imports numpy and, inside the builders, scikit-learn and Pillow; never torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agentarch.tasks.npzfiles import load_npz
from agentarch.tasks.sources import IMAGE_SUFFIXES, SPLIT_ALIASES, decode_images
from agentarch.tasks.splits import SPLIT_NAMES, Dataset, split_indices
from agentarch.tasks.task import SplitData, TaskError

if TYPE_CHECKING:
    from agentarch.tasks.task import Task

DATA_RANGE = 1.0
"""The span of pixel values: PSNR and SSIM are computed on images in [0, 1]."""
PSNR_CAP_DB = 100.0
"""An image restored exactly (MSE 0) scores this many dB rather than infinity, so a mean stays finite."""
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
"""SSIM as Wang et al. (2004) define it: an 11x11 Gaussian window of standard deviation 1.5 (normalised to sum 1),
C1 = (K1 L)^2 and C2 = (K2 L)^2 with L = DATA_RANGE, local statistics over the valid positions of the window only
(no padding), the map averaged per image and channel, then over channels and images. An image smaller than 11
pixels on a side gets the largest odd window that fits (7 for 8x8 images), with the same standard deviation."""
NOISE_SEED = 20240
"""The seed of the built-in denoising task's noise and of a task file's `degradation = "noise"`: the noisy inputs
are the same on every machine and for every split seed (the noise belongs to the image, not to the split)."""


# -- metrics ------------------------------------------------------------------------------------------------------


def _checked(task_name: str, outputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outputs and targets as float64 (N, C, H, W), the outputs clipped to [0, 1]; TaskError for anything else.

    The outputs came from candidate code (or its graph), so their shape, dtype and values are checked, never
    assumed: exactly the targets' shape, floats, every value finite. Clipping is what displaying or saving the
    image would do, and PSNR is reported on the clipped image in every restoration benchmark."""
    outputs, targets = np.asarray(outputs), np.asarray(targets)
    if not np.issubdtype(outputs.dtype, np.floating):
        raise TaskError(f"{task_name}: restored images must be floats, got dtype {outputs.dtype}")
    if targets.ndim != 4 or not np.issubdtype(targets.dtype, np.floating) or len(targets) == 0:
        raise TaskError(f"{task_name}: targets must be floats (N, C, H, W), got {targets.dtype} {targets.shape}")
    if outputs.shape != targets.shape:
        raise TaskError(f"{task_name}: outputs have shape {outputs.shape}; expected {targets.shape}")
    if not np.isfinite(outputs).all():
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(outputs))[0])
        raise TaskError(f"{task_name}: restored images hold NaN or Inf (first at index {first})")
    return np.clip(outputs.astype(np.float64), 0.0, DATA_RANGE), targets.astype(np.float64)


def psnr(outputs: np.ndarray, targets: np.ndarray, task_name: str = "dense") -> float:
    """Peak signal-to-noise ratio in dB, `10 log10(L^2 / MSE)` per image (over all its channels and pixels),
    averaged over the images; an exact image counts PSNR_CAP_DB."""
    out, ref = _checked(task_name, outputs, targets)
    mse = ((out - ref) ** 2).reshape(len(ref), -1).mean(axis=1)
    per_image = 10.0 * np.log10(DATA_RANGE**2 / np.maximum(mse, DATA_RANGE**2 * 10 ** (-PSNR_CAP_DB / 10)))
    return float(per_image.mean())


def gaussian_window(size: int, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """A 1-D Gaussian of `size` taps (odd), normalised to sum 1: SSIM's window is its outer product with itself."""
    taps = np.arange(size, dtype=np.float64) - (size - 1) / 2
    window = np.exp(-(taps**2) / (2 * sigma**2))
    return window / window.sum()


def _filter(images: np.ndarray, window: np.ndarray) -> np.ndarray:
    """`images` (..., H, W) filtered by the separable `window` on both image axes, valid positions only."""
    k = len(window)
    rows = np.lib.stride_tricks.sliding_window_view(images, k, axis=-2) @ window  # (..., H - k + 1, W)
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=-1) @ window


def ssim(outputs: np.ndarray, targets: np.ndarray, task_name: str = "dense") -> float:
    """Structural similarity (see SSIM_WINDOW for the window and constants), averaged over images and channels."""
    out, ref = _checked(task_name, outputs, targets)
    side = min(ref.shape[-2:])
    window = gaussian_window(min(SSIM_WINDOW, side if side % 2 else side - 1))
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    mu_x, mu_y = _filter(out, window), _filter(ref, window)
    var_x = _filter(out * out, window) - mu_x**2
    var_y = _filter(ref * ref, window) - mu_y**2
    cov = _filter(out * ref, window) - mu_x * mu_y
    similarity = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(similarity.mean(axis=(-2, -1)).mean())


def score(task: Task, outputs: np.ndarray, targets: np.ndarray) -> float:
    """The task's metric (psnr or ssim) of restored images against the held-out targets."""
    return ssim(outputs, targets, task.name) if task.metric == "ssim" else psnr(outputs, targets, task.name)


def scores(task: Task, outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Both restoration metrics, {"psnr": dB, "ssim": ...}: the task ranks by its own, a page can show the other."""
    return {"psnr": psnr(outputs, targets, task.name), "ssim": ssim(outputs, targets, task.name)}


# -- degradations -------------------------------------------------------------------------------------------------


def downscale(images: np.ndarray, factor: int) -> np.ndarray:
    """Area downscaling: the mean of each `factor` x `factor` block of float images (N, C, H, W), H and W multiples
    of the factor (a box filter, so the low-resolution image is exactly what a coarser sensor would record)."""
    n, c, h, w = images.shape
    if h % factor or w % factor:
        raise TaskError(f"images of {h}x{w} cannot be downscaled by {factor}: the sides must be multiples of it")
    blocks = images.reshape(n, c, h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(3, 5), dtype=np.float64).astype(np.float32)


def add_noise(images: np.ndarray, sigma: float, seed: int = NOISE_SEED) -> np.ndarray:
    """Additive white Gaussian noise of standard deviation `sigma` (in [0, 1] pixel units), not clipped."""
    rng = np.random.default_rng(seed)
    return (images + rng.normal(0.0, sigma, images.shape)).astype(np.float32)


def as_unit_floats(images: np.ndarray, where: str) -> np.ndarray:
    """Images as float32 in [0, 1]: uint8 divided by 255, floats checked to be finite and within [0, 1]. An empty
    array (an npz's empty split) is refused first: it has no minimum to check, and every split needs images."""
    if images.size == 0:
        raise TaskError(f"{where}: no images; every split needs at least one")
    if images.dtype == np.uint8:
        return (images / 255.0).astype(np.float32)
    if not np.issubdtype(images.dtype, np.floating):
        raise TaskError(f"{where}: images must be uint8 (0..255) or floats in [0, 1], got dtype {images.dtype}")
    if not np.isfinite(images).all():
        raise TaskError(f"{where}: images hold NaN or infinity")
    if images.min() < 0 or images.max() > 1:
        raise TaskError(
            f"{where}: float images must lie in [0, 1], found [{images.min():.4g}, {images.max():.4g}]; "
            "divide by the largest value (255 for 8-bit pixels)"
        )
    return images.astype(np.float32)


# -- the stored formats -------------------------------------------------------------------------------------------


def check_splits(task: Task, splits: SplitData) -> None:
    """Refuse dense data that breaks the stored formats (module docstring) before it is cached."""
    if task.out_shape is None or len(task.out_shape) != 3 or len(task.in_shape) != 3:
        raise TaskError(f"{task.name}: a dense task has in_shape and out_shape (C, H, W)")
    if task.num_classes != task.out_shape[0]:
        raise TaskError(f"{task.name}: num_classes must be the restored image's channels ({task.out_shape[0]})")
    for split in ("train", "val", "test"):
        x, y = getattr(splits, f"{split}_x"), getattr(splits, f"{split}_y")
        if len(x) == 0 or len(x) != len(y):
            raise TaskError(f"{task.name}: {split} split has {len(x)} inputs and {len(y)} targets")
        for what, array, shape in (("inputs", x, task.in_shape), ("targets", y, task.out_shape)):
            want = (len(x), *shape)
            if array.dtype != np.float32 or array.shape != want:
                raise TaskError(f"{task.name}: {split} {what} are {array.dtype} {array.shape}; expected float32 {want}")
            if not np.isfinite(array).all():
                raise TaskError(f"{task.name}: {split} {what} hold NaN or Inf")
        if y.min() < 0 or y.max() > DATA_RANGE:
            raise TaskError(f"{task.name}: {split} targets span [{y.min():.4g}, {y.max():.4g}]; expected [0, 1]")


# -- the built-in tasks -------------------------------------------------------------------------------------------

DIGITS_SIDE = 16
"""The built-in tasks' clean images: the 8x8 digits upsampled to 16x16 (bicubic, clipped to [0, 1])."""
DIGITS_SIGMA = 0.1
"""digits-denoise's noise: about 2.5 times the std of a clean pixel's difference from its neighbour."""


def clean_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as float32 (N, 1, 16, 16) images in [0, 1], with their classes (for a split
    stratified like the digits task's)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = (digits.images / 16.0).astype(np.float32)
    big = [
        np.asarray(Image.fromarray(image).resize((DIGITS_SIDE, DIGITS_SIDE), Image.Resampling.BICUBIC))
        for image in small
    ]
    return np.clip(np.stack(big), 0.0, 1.0)[:, None].astype(np.float32), digits.target.astype(np.int64)


def _digits_pairs(task: Task, degraded: np.ndarray, clean: np.ndarray, classes: np.ndarray, seed: int) -> SplitData:
    """The digits task's 60/20/20 split (stratified by class, seeded) of (degraded, clean) pairs."""
    rest, test = split_indices(classes, 0.2, seed)
    train_in_rest, val_in_rest = split_indices(classes[rest], 0.25, seed)
    train, val = rest[train_in_rest], rest[val_in_rest]
    return SplitData(degraded[train], clean[train], degraded[val], clean[val], degraded[test], clean[test])


def build_digits_sr(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> SplitData:
    """digits-sr2: each clean 16x16 digit downscaled by the task's factor (area average) is the input."""
    clean, classes = clean_digits()
    factor = clean.shape[-1] // task.in_shape[-1]
    return _digits_pairs(task, downscale(clean, factor), clean, classes, split_seed)


def build_digits_denoise(task: Task, data_dir: Path | None, download: bool, split_seed: int) -> SplitData:
    """digits-denoise: each clean 16x16 digit plus Gaussian noise (DIGITS_SIGMA, NOISE_SEED) is the input."""
    clean, classes = clean_digits()
    return _digits_pairs(task, add_noise(clean, DIGITS_SIGMA), clean, classes, split_seed)


def describe_factor(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> str:
    """'x2 super-resolution' or 'same size' for a task card or a check's report."""
    factor = out_shape[-1] / in_shape[-1]
    return "same size" if factor == 1 else f"x{factor:g} super-resolution" if math.isfinite(factor) else "?"


# -- a task file's data -------------------------------------------------------------------------------------------


def check_degradation(where: str, kind: str, degradation: str | None, factor: int | None, sigma: float | None) -> None:
    """The `[data]` keys of a clean-image folder must name one degradation with its own setting, and only a dense
    task has any (a class folder is not degraded)."""
    if kind != "dense":
        if degradation is not None or factor is not None or sigma is not None:
            raise TaskError(f"{where}: data.degradation: only a dense task degrades its images, this one is {kind!r}")
        return
    if degradation == "downscale" and (factor is None or sigma is not None):
        raise TaskError(f"{where}: data.factor: degradation 'downscale' takes factor = 2, 3 or 4 (and no sigma)")
    if degradation == "noise" and (sigma is None or factor is not None):
        raise TaskError(f"{where}: data.sigma: degradation 'noise' takes sigma = 0.1 (pixel units; no factor)")
    if degradation is None and (factor is not None or sigma is not None):
        raise TaskError(f"{where}: data.degradation: name it ('downscale' or 'noise') to use factor or sigma")


def read_npz(path: Path) -> Dataset:
    """Pairs from a NumPy file: `inputs` and `targets` (split by seed), or `train_inputs`, `train_targets`, `val_...`,
    `test_...` (the split given); uint8 or floats in [0, 1], (N, C, H, W) or (N, H, W) for grey images."""
    arrays = load_npz(path)
    if all(f"{s}_{p}" in arrays for s in SPLIT_NAMES for p in ("inputs", "targets")):
        prefixes = [f"{s}_" for s in SPLIT_NAMES]
    elif "inputs" in arrays and "targets" in arrays:
        prefixes = [""]
    else:
        raise TaskError(
            f"{path}: holds {', '.join(sorted(arrays)) or 'no arrays'}; a dense task expects inputs and targets "
            "(split by seed), or train_inputs, train_targets, val_inputs, val_targets, test_inputs, test_targets"
        )
    xs, ys = [], []
    for prefix in prefixes:
        x, y = (_images(arrays[f"{prefix}{p}"], f"{path} ({prefix}{p})") for p in ("inputs", "targets"))
        if len(x) != len(y):
            raise TaskError(f"{path}: {prefix}inputs has {len(x)} images but {prefix}targets {len(y)}")
        xs.append(x)
        ys.append(y)
    return _pairs(xs, ys, str(path))


def _images(array: np.ndarray, where: str) -> np.ndarray:
    """(N, C, H, W) float32 images in [0, 1] from uint8 or float (N, C, H, W) or (N, H, W)."""
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise TaskError(f"{where}: images must be (N, C, H, W) with 1 or 3 channels, or (N, H, W); got {array.shape}")
    return as_unit_floats(array, where)


def _pairs(xs: list[np.ndarray], ys: list[np.ndarray], where: str) -> Dataset:
    """One Dataset of (input, target) pairs from one array each (split by seed) or one per split (given)."""
    for x, y in zip(xs, ys):
        if x.shape[1:] != xs[0].shape[1:] or y.shape[1:] != ys[0].shape[1:]:
            raise TaskError(f"{where}: every split's inputs and targets must share one size each")
    x, y = xs[0], ys[0]
    if x.shape[1] != y.shape[1]:
        raise TaskError(f"{where}: inputs have {x.shape[1]} channel(s) but targets {y.shape[1]}")
    if y.shape[2] % x.shape[2] or y.shape[3] % x.shape[3] or y.shape[2] // x.shape[2] != y.shape[3] // x.shape[3]:
        raise TaskError(
            f"{where}: targets of {y.shape[2]}x{y.shape[3]} are not the inputs' {x.shape[2]}x{x.shape[3]} scaled by "
            "one whole factor on both sides"
        )
    given = np.repeat(np.arange(3), [len(a) for a in xs]) if len(xs) == 3 else None
    return Dataset(np.concatenate(xs), np.concatenate(ys), given, None, where)


def read_folder(
    root: Path, degradation: str | None, factor: int | None, sigma: float | None, size: tuple[int, int, int] | None
) -> Dataset:
    """Images from a folder, optionally under train/val/test folders: clean images degraded as the file says
    (`degradation`), or without one, pairs: `inputs/` and `targets/` folders holding files of the same names.
    Clean images are resized to the declared `size`; pairs are taken at their own sizes."""
    if not root.is_dir():
        raise TaskError(f"image folder {root} does not exist")
    folders = split_folders(root)
    xs, ys = [], []
    for folder in folders.values():
        if degradation is None:
            names = _pair_names(folder)
            xs.append(as_unit_floats(decode_images([folder / "inputs" / n for n in names], None, folder), str(folder)))
            ys.append(as_unit_floats(decode_images([folder / "targets" / n for n in names], None, folder), str(folder)))
            continue
        files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TaskError(
                f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}); a clean-image folder holds them directly"
            )
        clean = as_unit_floats(decode_images(files, size, folder), str(folder))
        if degradation == "downscale":
            try:
                xs.append(downscale(clean, factor or 1))
            except TaskError as err:
                raise TaskError(f"{folder}: {err}; declare [input] height and width as multiples of it") from None
        else:
            xs.append(add_noise(clean, sigma or 0.0, NOISE_SEED + len(xs)))
        ys.append(clean)
    return _pairs(xs, ys, str(root))


def split_folders(root: Path) -> dict[str, Path]:
    """{"train": ..., "val": ..., "test": ...} when `root` holds split folders, else {"all": root}."""
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    named = {d: SPLIT_ALIASES[d.lower()] for d in subdirs if d.lower() in SPLIT_ALIASES}
    if not named:
        return {"all": root}
    if sorted(set(named.values())) != sorted(SPLIT_NAMES) or len(named) != 3:
        raise TaskError(f"{root}: split folders must be exactly train, val (or validation) and test, found {subdirs}")
    return {split: root / d for split in SPLIT_NAMES for d, s in named.items() if s == split}


def _pair_names(folder: Path) -> list[str]:
    """The image names `folder/inputs/` and `folder/targets/` share; an error names any one of them lacks."""
    found = []
    for side in ("inputs", "targets"):
        if not (folder / side).is_dir():
            raise TaskError(
                f"{folder}: no {side}/ folder; pairs live in inputs/ and targets/ (files of the same names), or name "
                "a degradation (downscale with factor, or noise with sigma) for a folder of clean images"
            )
        found.append({f.name for f in (folder / side).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES})
    inputs, targets = found
    if inputs != targets or not inputs:
        missing = sorted(inputs ^ targets)[:3]
        raise TaskError(
            f"{folder}: inputs/ and targets/ must hold images of the same names; "
            + (f"only one side has {', '.join(missing)}" if missing else "both are empty")
        )
    return sorted(inputs)
