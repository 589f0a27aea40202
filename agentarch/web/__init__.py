"""The web UI over an archive: browse candidates and runs, decide reviews, export views (`agentarch serve`).

Review and browsing pages, on the top layer beside the CLI: the Starlette app (`app`), its pages by what they show
(`pages/`), the charts and plots they draw, and the static report of one run (`report`). It reads and writes the
archive only through the store's query layer and `Archive`, so it writes no SQL of its own.

May import: loop, llm, search, evaluation, store, tasks, isolation and the shared modules (errors, formats, config);
never the CLI.
"""

from agentarch.web.app import create_app, serve

__all__ = ["create_app", "serve"]
