"""`scifed ui`: start the researcher console on this machine and print its login address."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cli.common import IdentityOpt, JsonOpt, show
from scifed.console import handle_errors


@handle_errors("the coordinator")
def ui(identity: Path = IdentityOpt,
       host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; anything "
                                "but this host needs --tls-cert and --tls-key"),
       port: int = typer.Option(8765, "--port", help="Port (0: any free one)"),
       tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Serve over TLS: "
                                            "certificate (PEM)"),
       tls_key: Path | None = typer.Option(None, "--tls-key", help="Serve over TLS: key (PEM)"),
       downloads: Path | None = typer.Option(None, "--downloads", help="Folder for granted "
                                             "datasets you download (default: downloads/ "
                                             "in the identity directory)"),
       as_json: bool = JsonOpt) -> None:
    """The researcher console in a browser: search the catalog, submit jobs from a form,
    follow them live and open their results here, with your own key. Prints a one-time
    login address and serves until interrupted."""
    from cli.ui.app import build
    from scifed.web import serve

    tls = serve.tls_files(host, tls_cert, tls_key)
    console_app, client = build(identity, https=tls is not None, downloads=downloads)
    name = client.identity.cfg.name
    try:
        client.whoami()  # the coordinator answers this identity before anything listens

        def announce(url: str) -> None:
            login = f"{url}/login?token={console_app.sessions.login_token()}"
            show({"url": url, "login": login, "researcher": name}, as_json,
                 f"researcher console for [bold]{name}[/] at {url}\n"
                 f"open (once) to log in: {login}\npress Ctrl-C to stop")
            sys.stdout.flush()  # the address is needed now, also when stdout is a pipe

        serve.run(console_app.app, host, port, tls, announce)
    finally:
        client.close()
