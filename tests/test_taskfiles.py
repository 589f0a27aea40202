"""Task files and their data sources: parsing, every reader on real files, bad data, the cache, the CLI."""

from __future__ import annotations

import csv
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from agentarch.cli import app
from agentarch.tasks import taskfiles
from agentarch.tasks.preparation import INPUT_FILES, LABEL_FILES, prepare
from agentarch.tasks.registry import get_task
from agentarch.tasks.task import Task, TaskError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
runner = CliRunner()


def write_task(folder: Path, body: str, name: str = "task.toml") -> Path:
    path = folder / name
    path.write_text(body)
    return path


def image_folder(root: Path, per_class: int = 6, size: tuple[int, int] = (8, 8), mode: str = "L") -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(root / cls / f"{i}.png")


IMAGE_TASK = """
name = "pets"
description = "cats and dogs"
kind = "image"
[data]
source = "images"
path = "images"
[input]
channels = 1
height = 4
width = 4
[splits]
val = 0.25
test = 0.25
"""


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(header)
        out.writerows(rows)


def table_rows(n: int = 40) -> list[list[object]]:
    colours = ["red", "green", "blue"]
    return [[i * 0.5, colours[i % 3], i % 2 and "yes" or "no", float(i) * 2] for i in range(n)]


TABLE_TASK = """
name = "tab"
description = "a small table"
kind = "table"
[data]
source = "csv"
path = "t.csv"
target = "{target}"
regression = {regression}
"""


def build(task: Task, seed: int = 0):
    assert task.build is not None
    return task.build(task, None, False, seed)


# -- the examples -----------------------------------------------------------------------------------


def test_image_example_check_prints_what_a_candidate_gets(tmp_path):
    result = runner.invoke(
        app, ["tasks", "check", str(EXAMPLES / "shapes" / "task.toml"), "--cache-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "float32 (B, 1, 16, 16)" in result.output
    assert "logits (B, 3) over 3 classes: circle, square, triangle" in result.output
    assert "train 36, val 18, test 18" in result.output
    assert "accuracy (higher is better)" in result.output


@pytest.mark.parametrize(
    "example, says",
    [
        ("houses", ["float32 (B, 6)", "values (B, 1): price", "train 144, val 48, test 48", "mse (lower is better)"]),
        ("tiny-text", ["int64 ids (B, 64) in [0, 256)", "logits (B, 64, 256)", "bits_per_byte (lower is better)"]),
    ],
)
def test_table_and_text_examples_check(tmp_path, example, says):
    result = runner.invoke(app, ["tasks", "check", str(EXAMPLES / example / "task.toml"), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for text in says:
        assert text in result.output


def test_labels_stay_host_only_for_tables_texts_and_arrays(tmp_path):
    write_csv(tmp_path / "r.csv", ["review", "stars"], [[f"text {i}", i % 2] for i in range(20)])
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.normal(size=(20, 3)), y=np.arange(20) % 2)
    bodies = [
        'kind = "sequence"\n[data]\nsource = "csv"\npath = "r.csv"\ntarget = "stars"\ntext = "review"\n[input]\nseq_len = 8\n',
        'kind = "table"\n[data]\nsource = "npz"\npath = "t.npz"\n',
    ]
    for i, body in enumerate(bodies):
        task = get_task(str(write_task(tmp_path, f'name = "t{i}"\ndescription = "d"\n{body}', f"{i}.toml")))
        prepared = prepare(task, tmp_path / "cache")
        assert sorted(p.name for p in prepared.inputs_dir.iterdir()) == sorted(INPUT_FILES)
        assert sorted(p.name for p in prepared.labels_dir.iterdir()) == sorted(LABEL_FILES)


def test_csv_regression_example_loads_as_a_table(tmp_path):
    task = get_task(str(EXAMPLES / "houses" / "task.toml"))
    assert (task.name, task.kind, task.metric, task.direction) == ("houses", "table", "mse", "min")
    assert task.in_shape == (6,) and task.num_classes == 1  # area, rooms, age, 3 districts one-hot -> 1 price
    splits = build(task)
    assert splits.train_x.dtype == np.float32 and splits.train_y.dtype == np.float32
    assert [len(splits.train_x), len(splits.val_x), len(splits.test_x)] == [144, 48, 48]
    assert splits.train_y.shape == (144, 1)
    # the price never enters the inputs: no feature column equals the target
    assert not any(np.array_equal(splits.train_x[:, c], splits.train_y[:, 0]) for c in range(6))


def test_text_example_is_byte_language_modelling():
    task = get_task(str(EXAMPLES / "tiny-text" / "task.toml"))
    assert (task.kind, task.in_shape, task.num_classes, task.metric, task.direction) == (
        "lm",
        (64,),
        256,
        "bits_per_byte",
        "min",
    )
    splits = build(task)
    assert splits.train_x.dtype == np.int64 and np.array_equal(splits.train_x, splits.train_y)
    assert sum(len(s) for s in (splits.train_x, splits.val_x, splits.test_x)) == 5994 // 64


@pytest.mark.slow
def test_image_example_trains_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seed = Path(__file__).resolve().parent.parent / "archive" / "seeds" / "image" / "mlp.py"
    result = runner.invoke(
        app,
        ["eval", str(seed), "--task", str(EXAMPLES / "shapes" / "task.toml"), "--epochs", "1", "--json"],
        env={"AGENTARCH_CACHE_DIR": str(tmp_path / "cache"), "AGENTARCH_ARCHIVE": str(tmp_path / "a.db")},
    )
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["status"] == "trained", line


# -- each source ---------------------------------------------------------------------------------------


def test_image_folder_resizes_to_the_declared_size_and_keeps_labels_host_only(tmp_path):
    image_folder(tmp_path / "images", size=(8, 8), mode="RGB")
    task = get_task(str(write_task(tmp_path, IMAGE_TASK)))
    assert (task.in_shape, task.num_classes) == ((1, 4, 4), 2)
    prepared = prepare(task, tmp_path / "cache")
    assert sorted(p.name for p in prepared.inputs_dir.iterdir()) == sorted(INPUT_FILES)
    assert sorted(p.name for p in prepared.labels_dir.iterdir()) == sorted(LABEL_FILES)
    assert np.load(prepared.inputs_dir / "train_x.npy").dtype == np.uint8
    assert np.load(prepared.inputs_dir / "train_x.npy").shape[1:] == (1, 4, 4)
    assert taskfiles.classes(task) == ("cat", "dog")


def test_image_folder_with_split_folders_uses_them(tmp_path):
    for split, n in (("train", 4), ("validation", 2), ("test", 3)):
        image_folder(tmp_path / "images" / split, per_class=n)
    body = IMAGE_TASK.replace("[splits]\nval = 0.25\ntest = 0.25\n", "")
    splits = build(get_task(str(write_task(tmp_path, body))))
    assert [len(splits.train_x), len(splits.val_x), len(splits.test_x)] == [8, 4, 6]


def test_image_folder_without_a_size_takes_the_images_own(tmp_path):
    image_folder(tmp_path / "images", size=(5, 7), mode="RGB")
    body = IMAGE_TASK.replace("channels = 1\nheight = 4\nwidth = 4\n", "")
    assert get_task(str(write_task(tmp_path, body))).in_shape == (3, 7, 5)


def test_npz_per_split_and_one_pair(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (30, 1, 4, 4), dtype=np.uint8)
    y = np.arange(30) % 3
    np.savez(tmp_path / "pair.npz", x=x, y=y)
    np.savez(
        tmp_path / "split.npz",
        train_x=x[:20],
        train_y=y[:20],
        val_x=x[20:25],
        val_y=y[20:25],
        test_x=x[25:],
        test_y=y[25:],
    )
    pair = get_task(str(write_task(tmp_path, _npz_task("pair.npz", "[splits]\nval = 0.2\ntest = 0.2"), "pair.toml")))
    assert (pair.in_shape, pair.num_classes) == ((1, 4, 4), 3)
    assert [len(a) for a in build(pair)[:6:2]] == [18, 6, 6]
    given = get_task(str(write_task(tmp_path, _npz_task("split.npz", ""), "split.toml")))
    splits = build(given)
    assert [len(a) for a in splits[:6:2]] == [20, 5, 5]
    assert np.array_equal(splits.val_x, x[20:25])
    prepared = prepare(given, tmp_path / "cache")
    assert not (prepared.inputs_dir / "val_y.npy").exists() and (prepared.labels_dir / "val_y.npy").exists()


def _npz_task(file: str, splits: str, kind: str = "image") -> str:
    return f'name = "arr"\ndescription = "arrays"\nkind = "{kind}"\n[data]\nsource = "npz"\npath = "{file}"\n{splits}\n'


def test_npz_float_table_and_id_sequences(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", x=rng.normal(size=(20, 5)), y=np.arange(20) % 2)
    table = get_task(str(write_task(tmp_path, _npz_task("t.npz", "", "table"), "t.toml")))
    assert (table.in_shape, table.num_classes) == ((5,), 2) and build(table).train_x.dtype == np.float32
    np.savez(tmp_path / "s.npz", x=rng.integers(0, 50, (20, 7)), y=np.arange(20) % 2)
    seq = get_task(str(write_task(tmp_path, _npz_task("s.npz", "", "sequence"), "s.toml")))
    assert (seq.in_shape, seq.vocab_size) == ((7,), int(np.load(tmp_path / "s.npz")["x"].max()) + 1)


def test_csv_classes_and_categories_are_learned_on_train(tmp_path):
    write_csv(
        tmp_path / "train.csv",
        ["a", "colour", "flag", "label"],
        [[i, ["red", "blue"][i % 2], "x", ["b", "a"][i % 2]] for i in range(6)],
    )
    write_csv(tmp_path / "val.csv", ["a", "colour", "flag", "label"], [[1, "green", "x", "a"], [2, "red", "x", "b"]])
    write_csv(tmp_path / "test.csv", ["a", "colour", "flag", "label"], [[1, "blue", "x", "a"], [2, "red", "x", "b"]])
    body = 'name = "t"\ndescription = "d"\nkind = "table"\n[data]\nsource = "csv"\ntrain = "train.csv"\nval = "val.csv"\ntest = "test.csv"\ntarget = "label"\n'
    task = get_task(str(write_task(tmp_path, body)))
    assert task.in_shape == (4,) and task.num_classes == 2  # a, colour=blue, colour=red, flag=x
    splits = build(task)
    assert splits.train_y.tolist() == [1, 0, 1, 0, 1, 0]  # 'a' -> 0, 'b' -> 1 (sorted)
    assert splits.val_x[0].tolist() == [1, 0, 0, 1]  # green was never seen in train: all zeros
    ordinal = get_task(
        str(write_task(tmp_path, body.replace('target = "label"', 'target = "label"\nencoding = "ordinal"'), "o.toml"))
    )
    assert ordinal.in_shape == (3,) and build(ordinal).val_x[0].tolist() == [1, -1, 0]


def test_parquet_regression(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = table_rows()
    pq.write_table(
        pa.table({"x": [r[0] for r in rows], "c": [r[1] for r in rows], "y": [r[3] for r in rows]}),
        tmp_path / "t.parquet",
    )
    body = TABLE_TASK.format(target="y", regression="true").replace('"csv"', '"parquet"').replace("t.csv", "t.parquet")
    task = get_task(str(write_task(tmp_path, body)))
    assert (task.in_shape, task.num_classes, task.metric) == ((4,), 1, "mse")
    splits = build(task)
    assert splits.test_y.dtype == np.float32 and splits.test_y.shape == (len(splits.test_x), 1)


def test_csv_text_classification_is_byte_ids(tmp_path):
    write_csv(tmp_path / "r.csv", ["review", "stars"], [[f"review number {i} ünïcode", i % 2] for i in range(20)])
    body = 'name = "r"\ndescription = "d"\nkind = "sequence"\n[data]\nsource = "csv"\npath = "r.csv"\ntarget = "stars"\ntext = "review"\n[input]\nseq_len = 12\n'
    task = get_task(str(write_task(tmp_path, body)))
    assert (task.in_shape, task.num_classes, task.vocab_size) == ((12,), 2, 256)
    splits = build(task)
    assert splits.train_x.dtype == np.int64 and bytes(splits.train_x[0].astype(np.uint8)).startswith(b"review numbe")


def test_text_corpus_with_split_files(tmp_path):
    for name, size in (("train.txt", 400), ("val.txt", 100), ("test.txt", 100)):
        (tmp_path / name).write_text("abcdefghij" * (size // 10))
    body = 'name = "c"\ndescription = "d"\nkind = "lm"\n[data]\nsource = "text"\ntrain = "train.txt"\nval = "val.txt"\ntest = "test.txt"\n[input]\nseq_len = 25\n'
    splits = build(get_task(str(write_task(tmp_path, body))))
    assert [len(a) for a in splits[:6:2]] == [16, 4, 4]


def test_hf_image_text_and_table_datasets(tmp_path):
    datasets = pytest.importorskip("datasets", reason="the Hugging Face source needs `pip install datasets`")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8), mode="L") for _ in range(20)]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["no", "yes"])})
    datasets.Dataset.from_dict({"img": images, "label": [i % 2 for i in range(20)]}, features=features).save_to_disk(
        tmp_path / "imgs"
    )
    body = 'name = "h"\ndescription = "d"\nkind = "image"\n[data]\nsource = "hf"\npath = "imgs"\nimage = "img"\n'
    task = get_task(str(write_task(tmp_path, body, "img.toml")))
    assert (task.in_shape, task.num_classes, taskfiles.classes(task)) == ((1, 6, 6), 2, ("no", "yes"))
    prepared = prepare(task, tmp_path / "cache")
    assert sorted(p.name for p in prepared.inputs_dir.iterdir()) == sorted(INPUT_FILES)

    split = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_dict({"text": [f"t{i}"] * 4, "label": ["p", "q", "p", "q"]})
            for i, s in enumerate(("train", "validation", "test"))
        }
    )
    split.save_to_disk(tmp_path / "texts")
    body = 'name = "ht"\ndescription = "d"\nkind = "sequence"\n[data]\nsource = "hf"\npath = "texts"\ntext = "text"\n[input]\nseq_len = 4\n'
    splits = build(get_task(str(write_task(tmp_path, body, "text.toml"))))
    assert [len(a) for a in splits[:6:2]] == [4, 4, 4] and splits.train_y.tolist() == [0, 1, 0, 1]

    datasets.Dataset.from_dict(
        {"a": [float(i) for i in range(20)], "price": [2.0 * i for i in range(20)]}
    ).save_to_disk(tmp_path / "tab")
    body = 'name = "hb"\ndescription = "d"\nkind = "table"\n[data]\nsource = "hf"\npath = "tab"\ntarget = "price"\nregression = true\n'
    task = get_task(str(write_task(tmp_path, body, "tab.toml")))
    assert (task.in_shape, task.num_classes, task.metric) == ((1,), 1, "mse")
    assert not np.isin(build(task).val_y, build(task).val_x).all()  # the target is not among the features


# -- bad files and bad data ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        ("name = 'x'\n", "task.toml: description: missing"),
        (
            "name = 'x'\ndescription = 'd'\nkind = 'image'\ncolour = 1\n[data]\nsource = 'images'\npath = 'i'\n",
            "task.toml: colour: unknown key",
        ),
        (
            "name = 'x'\ndescription = 'd'\nkind = 'image'\n[data]\nsource = 'zip'\npath = 'i'\n",
            "task.toml: data: unknown source 'zip'",
        ),
        (
            "name = 'x'\ndescription = 'd'\nkind = 'table'\n[data]\nsource = 'csv'\npath = 'i'\ntraget = 'y'\n",
            "task.toml: data.target: missing",
        ),
        (
            "name = 'x'\ndescription = 'd'\nkind = 'image'\nmetric = 'mse'\n[data]\nsource = 'images'\npath = 'i'\n",
            "task.toml: metric: 'mse' does not score a 'image' task",
        ),
        (
            "name = 'x'\ndescription = 'd'\nkind = 'image'\nmetric = 'top5'\n[data]\nsource = 'images'\npath = 'i'\n",
            "task.toml: metric: 'top5'",
        ),
        (
            "name = 'x'\ndescription = 'd'\nkind = 'lm'\n[data]\nsource = 'images'\npath = 'i'\n",
            "task.toml: data.source: a 'images' source cannot feed a 'lm' task",
        ),
        (
            "name = 'x'\ndescription = 'd'\nkind = 'lm'\n[data]\nsource = 'text'\npath = 'c.txt'\n",
            "task.toml: input.seq_len: missing",
        ),
        (
            "name = 'x'\ndescription = 'd'\nkind = 'image'\n[data]\nsource = 'images'\npath = 'i'\n[input]\nchannels = 2\n",
            "task.toml: input.channels",
        ),
        (
            "name = 'x'\ndescription = 'd'\nkind = 'image'\n[data]\nsource = 'images'\npath = 'i'\n[splits]\nval = 0.6\ntest = 0.5\n",
            "task.toml: splits: val + test = 1.1",
        ),
        (
            "name = 'digits'\ndescription = 'd'\nkind = 'image'\n[data]\nsource = 'images'\npath = 'i'\n",
            "task.toml: name: 'digits' is a built-in task",
        ),
        (
            "name = 'x'\ndescription = 'd'\nkind = 'image'\n[data]\nsource = 'images'\npath = 'nowhere'\n",
            "task.toml: data.path: ",
        ),
        ("name = [\n", "task.toml: not valid TOML"),
    ],
)
def test_a_bad_task_file_names_the_file_and_the_key(tmp_path, body, message):
    with pytest.raises(TaskError, match=message.replace("(", r"\(").replace("+", r"\+")):
        get_task(str(write_task(tmp_path, body)))


def test_pydantic_errors_are_one_line_each(tmp_path):
    body = "name = 'a b'\ndescription = 'd'\nkind = 'table'\n[data]\nsource = 'csv'\npath = 'x'\ntarget = 'y'\n[train]\nepochs = 0\n"
    with pytest.raises(TaskError) as caught:
        get_task(str(write_task(tmp_path, body)))
    lines = str(caught.value).splitlines()
    assert len(lines) == 2 and all(line.startswith(str(tmp_path / "task.toml")) for line in lines)
    assert ": name: " in lines[0] and ": train.epochs: " in lines[1]


def test_bad_data_is_named(tmp_path):
    write_csv(tmp_path / "t.csv", ["x", "c", "flag", "y"], table_rows())
    with pytest.raises(TaskError, match=r"t.csv: no target column 'price'; its columns are x, c, flag, y"):
        get_task(str(write_task(tmp_path, TABLE_TASK.format(target="price", regression="false"))))
    rows = table_rows()
    rows[6][0] = ""
    write_csv(tmp_path / "t.csv", ["x", "c", "flag", "y"], rows)
    with pytest.raises(TaskError, match=r"t.csv: column 'x' line 8 is empty or NaN"):
        get_task(str(write_task(tmp_path, TABLE_TASK.format(target="y", regression="true"))))
    rows[6][0] = "nan"
    write_csv(tmp_path / "t.csv", ["x", "c", "flag", "y"], rows)
    with pytest.raises(TaskError, match=r"column 'x' line 8 is empty or NaN"):
        get_task(str(write_task(tmp_path, TABLE_TASK.format(target="y", regression="true"))))

    (tmp_path / "bad.txt").write_bytes(b"fine line\nbad \xff byte\n" * 20)
    body = (
        'name = "c"\ndescription = "d"\nkind = "lm"\n[data]\nsource = "text"\npath = "bad.txt"\n[input]\nseq_len = 8\n'
    )
    with pytest.raises(TaskError, match=r"bad.txt: not UTF-8 text \(line 2"):
        get_task(str(write_task(tmp_path, body)))


def test_mixed_image_sizes_without_a_declared_size(tmp_path):
    image_folder(tmp_path / "images")
    Image.new("L", (9, 9)).save(tmp_path / "images" / "dog" / "odd.png")
    body = IMAGE_TASK.replace("channels = 1\nheight = 4\nwidth = 4\n", "")
    with pytest.raises(TaskError, match=r"odd.png is 9x9 L but .*cat/0.png is 8x8 L; declare \[input\]"):
        get_task(str(write_task(tmp_path, body)))


def test_a_class_missing_from_train_and_a_split_too_small(tmp_path):
    for split, n in (("train", 2), ("val", 2), ("test", 2)):
        image_folder(tmp_path / "images" / split, per_class=n)
    for f in (tmp_path / "images" / "train" / "dog").iterdir():
        f.unlink()
    body = IMAGE_TASK.replace("[splits]\nval = 0.25\ntest = 0.25\n", "")
    with pytest.raises(TaskError, match=r"class 'dog' of .*images has no examples in the train split"):
        build(get_task(str(write_task(tmp_path, body))))
    for f in (
        list((tmp_path / "images" / "test" / "dog").iterdir())
        + list((tmp_path / "images" / "test" / "cat").iterdir())[1:]
    ):
        f.unlink()
    with pytest.raises(TaskError, match=r"the test split of .*images has 1 example\(s\); it needs at least 2"):
        build(get_task(str(write_task(tmp_path, body))))


def test_a_loader_error_caches_nothing(tmp_path):
    for split in ("train", "val", "test"):
        image_folder(tmp_path / "images" / split, per_class=2)
    for f in (tmp_path / "images" / "test" / "dog").iterdir():
        f.unlink()
    (tmp_path / "images" / "test" / "cat" / "1.png").unlink()
    task = get_task(str(write_task(tmp_path, IMAGE_TASK.replace("[splits]\nval = 0.25\ntest = 0.25\n", ""))))
    with pytest.raises(TaskError, match="test split"):
        prepare(task, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


# -- caching, listing, entry points ----------------------------------------------------------------


def test_changed_data_gets_a_new_fingerprint_and_cache(tmp_path):
    image_folder(tmp_path / "images")
    path = write_task(tmp_path, IMAGE_TASK)
    first = get_task(str(path))
    assert get_task(str(path)).fingerprint == first.fingerprint
    Image.new("L", (8, 8)).save(tmp_path / "images" / "cat" / "new.png")
    second = get_task(str(path))
    assert second.fingerprint != first.fingerprint
    assert prepare(first, tmp_path / "c").inputs_dir != prepare(second, tmp_path / "c").inputs_dir
    assert len(build(second).train_x) + len(build(second).val_x) + len(build(second).test_x) == 13


def test_tasks_lists_the_files_in_tasks_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tasks").mkdir()
    image_folder(tmp_path / "tasks" / "images")
    write_task(tmp_path / "tasks", IMAGE_TASK, "pets.toml")
    write_task(tmp_path / "tasks", "name = 'broken'\n", "broken.toml")
    result = runner.invoke(app, ["tasks"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "pets (tasks/pets.toml)" in result.output and "(1, 4, 4)" in result.output
    assert "tasks/broken.toml" in result.output and "error" in result.output
    assert "digits" in result.output


def test_tasks_check_reports_a_bad_file(tmp_path):
    path = write_task(
        tmp_path, "name = 'x'\ndescription = 'd'\nkind = 'image'\n[data]\nsource = 'images'\npath = 'none'\n"
    )
    result = runner.invoke(app, ["tasks", "check", str(path), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 2 and "data.path" in result.output


def test_an_entry_point_task(tmp_path, monkeypatch):
    package = tmp_path / "site"
    (package / "mytasks-1.0.dist-info").mkdir(parents=True)
    (package / "mytasks-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: mytasks\nVersion: 1.0\n")
    (package / "mytasks-1.0.dist-info" / "entry_points.txt").write_text("[agentarch.tasks]\nnoise = mytasks:noise\n")
    (package / "mytasks.py").write_text(
        "import numpy as np\n"
        "from agentarch.tasks.task import SplitData, Task\n"
        "def build(task, data_dir, download, seed):\n"
        "    rng = np.random.default_rng(seed)\n"
        "    part = lambda n: (rng.normal(size=(n, 3)).astype(np.float32), np.arange(n, dtype=np.int64) % 2)\n"
        "    return SplitData(*part(10), *part(4), *part(4))\n"
        "def noise():\n"
        "    return Task('noise', 'table', (3,), 2, 'accuracy', 1, 4, 1e-3, 0.0, 1000, False, 'noise', build=build)\n"
    )
    monkeypatch.syspath_prepend(str(package))
    importlib.invalidate_caches()
    assert "noise" in taskfiles.entry_point_names()
    task = get_task("noise")
    assert task.name == "noise" and len(build(task).train_x) == 10
    monkeypatch.delitem(sys.modules, "mytasks")
