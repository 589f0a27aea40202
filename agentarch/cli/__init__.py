"""The command line: a thin layer that parses flags into Settings, calls the library and prints.

May import anything in agentarch; nothing imports it (but the web's report command shares nothing with it).

Every command pays for the modules the app imports before it parses a flag, so a command module imports at its top
only what its signatures and help need (Typer, Rich, Settings, the names its help lists) and imports the rest of
the library (the loop and LangGraph, torch and the evaluator, the archive's sqlite_utils, the predictor's scipy, the
web) inside the command that runs it: `agentarch --help`, a command's help and a mistyped flag answer at once.
tests/test_cli_startup.py holds that; benchmarks/cli_startup.md measures it.
"""

from agentarch.cli.main import app

__all__ = ["app"]
