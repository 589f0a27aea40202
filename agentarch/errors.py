"""The one base of every error a user can fix, so the CLI has one handler and a bug stays a traceback.

Each module keeps its own error class (TaskError, ArchiveError, ...), derived from AgentarchError
and, where callers expect it, from the builtin it always was (ValueError, RuntimeError). The CLI turns
any AgentarchError into its message and exit code 2; any other exception is a programming error and
is shown as one.
"""


class AgentarchError(Exception):
    """A problem with what was asked (a flag, a file, a task, the machine); the message says what to fix."""


class UsageError(AgentarchError, ValueError):
    """An argument out of its range or of the wrong form (seeds, budgets, an unknown algorithm or strategy)."""
