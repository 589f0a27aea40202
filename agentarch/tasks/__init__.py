"""Tasks are data: the registry of built-in tasks, task files and installed packages' tasks, their
preparation (seeded splits cached as inputs for the sandbox and labels for the host only) and metrics.

May import: the shared modules (errors, formats). `Task` is public: packages that publish tasks under the
`agentarch.tasks` entry-point group return one.
"""

from agentarch.tasks.task import Task

__all__ = ["Task"]
