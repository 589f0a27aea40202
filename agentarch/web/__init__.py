"""The web UI over an archive: browse candidates and runs, decide reviews, export views (`agentarch serve`)."""

from agentarch.web.app import create_app, serve

__all__ = ["create_app", "serve"]
