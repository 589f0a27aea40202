"""`python -m agentarch.cli`: the same commands as the `agentarch` console script."""

from agentarch.cli import app

app()
