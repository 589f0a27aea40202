"""The `agentarch` command line: a thin Typer layer over the library (evaluate, archive, tasks, sandbox).

This module only assembles the app: each command lives in the module of its group and is registered here
by name, in the order `agentarch --help` lists them; the archive and tasks sub-apps come whole.
"""

from __future__ import annotations

from agentarch.cli import (
    archive,
    baseline,
    dataset,
    doctor,
    evaluate,
    export,
    knowledge,
    predict,
    review,
    run,
    serve,
    tasks,
    tune,
)
from agentarch.cli.common import App

app = App(
    help="LLM-driven neural architecture discovery: propose, sandbox, train, archive.\n\n"
    "Every option that shows a setting's default can also be set in agentarch.toml (or the file in "
    "AGENTARCH_CONFIG) or as an AGENTARCH_<NAME> variable; the variable beats the file, the flag beats both.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(archive.archive_app, name="archive")

app.command("eval")(evaluate.eval_command)
app.command("run")(run.run_command)
app.command("prompt")(run.prompt_command)
app.command("halve")(evaluate.halve_command)
app.command("review")(review.review_command)
app.command("baseline")(baseline.baseline_command)
app.command("serve")(serve.serve_command)
app.command("report")(serve.report_command)
app.command("predict")(predict.predict_command)
app.command("export")(export.export_command)
app.command("dataset")(dataset.dataset_command)
app.command("tune")(tune.tune_command)
app.add_typer(tasks.tasks_app, name="tasks")
app.add_typer(knowledge.knowledge_app, name="knowledge")
app.command("doctor")(doctor.doctor_command)


if __name__ == "__main__":
    app()
