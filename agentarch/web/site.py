"""What every page's handlers share: the one archive file they read, the templates they render with.

`agentarch.web.app.create_app` makes one `Site` and hands it to each page module's `routes`. Its own module because
the page modules and the app both need it, and the app imports the page modules: here, below both, it makes no
circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from agentarch.store.archive import Archive
from agentarch.web.predictor_quality import Qualities


@dataclass(frozen=True)
class Site:
    archive_path: Path
    templates: Jinja2Templates
    qualities: Qualities

    def archive(self) -> Archive:
        """A new handle on the archive. Every request opens its own `Archive`: SQLite connections must not cross the
        worker threads the sync handlers run on, and opening one costs well under a millisecond."""
        return Archive(self.archive_path)

    def render(self, request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)
