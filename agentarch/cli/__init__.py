"""The command line: a thin layer that parses flags into Settings, calls the library and prints.

May import anything in agentarch; nothing imports it (but the web's report command shares nothing with it).
"""

from agentarch.cli.main import app

__all__ = ["app"]
