"""A TestClient that reaches the web UI as a person's browser does: by a name the server answers to, with the CSRF
token of its pages in every form it posts (`agentarch.web.access`)."""

import re

from starlette.testclient import TestClient

LOCAL = "http://localhost"
"""Where the tests' clients say they are: a loopback name, which an app made without `hosts` answers on any port."""


class Browser(TestClient):
    """`post(url, data={...})` adds the `csrf` field its pages carry unless the test gives one (or `csrf=None`)."""

    def __init__(self, app, base_url: str = LOCAL, **kwargs):
        super().__init__(app, base_url=base_url, **kwargs)

    def csrf(self) -> str:
        """The CSRF token of this browser's pages (every page carries it in a meta tag; forms in a hidden field)."""
        found = re.search(r'<meta name="csrf" content="([^"]+)">', self.get("/runs").text)
        assert found, "no CSRF token on the page"
        return found[1]

    def post(self, url, data=None, **kwargs):
        if isinstance(data, dict):
            if "csrf" not in data:
                data = {**data, "csrf": self.csrf()}
            elif data["csrf"] is None:
                data = {k: v for k, v in data.items() if k != "csrf"}
        return super().post(url, data=data, **kwargs)
