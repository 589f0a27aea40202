"""`agentarch serve` and `agentarch report`: show the archive outside the terminal, as live web pages or as a
static HTML report of one run.

`serve` binds loopback unless told otherwise, and refuses any other address without a token: the review queue
decides what code runs on this machine's trainers.

Its own module because both hand the archive to the web room and print only where to look.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Optional

import typer

from agentarch.cli.common import ArchiveOpt, archive_path, err, fail, open_archive, out, setting, settings_or_exit


def serve_command(
    archive: ArchiveOpt = None,
    web_host: Annotated[Optional[str], setting("web_host", "--host")] = None,
    web_port: Annotated[Optional[int], setting("web_port", "--port")] = None,
    token: Annotated[Optional[str], setting("web_token", "--token", note=" (AGENTARCH_WEB_TOKEN)")] = None,
    allow_hosts: Annotated[
        Optional[list[str]], setting("allow_hosts", "--allow-host", note="; repeat it for more", metavar="NAME[:PORT]")
    ] = None,
    generate_token: Annotated[
        bool,
        typer.Option(
            "--generate-token",
            help="make a random token for this start and print the address that carries it, once",
        ),
    ] = False,
) -> None:
    """Browse the archive in a web browser: leaderboards, candidates, lineage, diffs, runs, the review queue.

    Bound to 127.0.0.1 by default. To share it on a network, bind another address with a token (--token, or
    --generate-token) and open the printed address; name the host people type with --allow-host. The archive also
    opens in Datasette for ad-hoc SQL (see docs/archive.md). Example:

        agentarch serve --archive archive/archive.db --port 8000
        agentarch serve --host 0.0.0.0 --generate-token --allow-host archive.lan
    """
    from agentarch import web
    from agentarch.web.access import Hosts, is_loopback

    settings = settings_or_exit(
        archive=archive, web_host=web_host, web_port=web_port, web_token=token, allow_hosts=allow_hosts
    )
    path = settings.archive
    if not path.is_file():  # opening it would create an empty archive and serve that, hiding a mistyped path
        raise fail(f"no archive at {path}; pass an existing one with --archive (a run, eval or baseline makes one)")
    secret = settings.web_token.get_secret_value() if settings.web_token else None
    if generate_token:
        if secret:
            raise fail("give --token or --generate-token, not both")
        secret = secrets.token_urlsafe(24)
    if not is_loopback(settings.web_host) and not secret:
        raise fail(
            f"refusing to serve on {settings.web_host} without a token: anyone on the network could read the archive "
            "and decide reviews. Add --generate-token (or --token with at least 16 characters), or bind 127.0.0.1."
        )
    open_archive(path).close()
    shown_host = f"[{settings.web_host}]" if ":" in settings.web_host else settings.web_host
    address = f"http://{shown_host}:{settings.web_port}/" + (f"?token={secret}" if secret else "")
    # printed once: the token is in no log after this line, and the browser swaps it for a cookie on first use
    err.print(f"serving {path} at {address} (Ctrl-C stops)", markup=False, highlight=False, soft_wrap=True)
    if not is_loopback(settings.web_host):  # a person opens it by some name; only these are answered
        hosts = Hosts.of(settings.web_host, settings.web_port, settings.allow_hosts).describe()
        err.print(
            f"answering the Host names {hosts} (add more with --allow-host)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    web.serve(path, host=settings.web_host, port=settings.web_port, token=secret, allow_hosts=settings.allow_hosts)


def report_command(
    run_id: Annotated[str, typer.Argument(help="the run, as `agentarch archive runs` lists it")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder for index.html and the plots")] = Path("report"),
    archive: ArchiveOpt = None,
) -> None:
    """Write a static HTML report of one run (summary, top candidates, plots as PNG) to share."""
    from agentarch.web.report import write_report

    index = write_report(archive_path(archive), run_id, out_dir)
    out.print(f"wrote {index}")
