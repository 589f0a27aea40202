"""The static report of a run with several objectives shows its Pareto front and hypervolume, as the summary has them."""

from __future__ import annotations

from agentarch.store.archive import Archive
from agentarch.web.report import write_report


def test_the_report_of_a_two_objective_run_lists_its_front(tmp_path):
    with Archive(tmp_path / "a.db") as db:
        run_id = db.start_run("offline", "digits", "rea", {"objectives": ["val:max", "params:min"]})
        ids = [
            db.record(
                {
                    "task": "digits",
                    "name": f"n{i}",
                    "proposer": "rea",
                    "code": f"# {i}",
                    "status": "trained",
                    "run_id": run_id,
                    "params": params,
                },
                {"status": "trained", "fidelity": 1, "val_accuracy": val, "test_accuracy": val, "params": params},
            )
            for i, (val, params) in enumerate([(0.9, 1000), (0.95, 5000), (0.8, 6000)])
        ]
        summary = {
            "objectives": {"objectives": ["val:max", "params:min"], "constraints": ["params<=10000"]},
            "front": [
                {"id": ids[0], "val_accuracy": 0.9, "params": 1000},
                {"id": ids[1], "val_accuracy": 0.95, "params": 5000},
            ],
            "hypervolume": 123.4,
            "reference": [0.785, 6500.0],
        }
        db.finish_run(run_id, "finished", summary)
    html = write_report(tmp_path / "a.db", run_id, tmp_path / "report").read_text()
    assert "its front holds 2 candidate(s), hypervolume 123.4" in html and "params&lt;=10000" in html
    assert f"#{ids[0]}" in html and "5,000" in html
