"""The sandbox side: code that runs in the isolated process (the runner and its training loop).

Installed as `agentarch.runner` (this folder is its source). Inside the sandbox it is imported on its
own, under its folder's name, never through the `agentarch` package: its modules import each other
relatively and nothing of the orchestrator.
"""
