"""The `scifed` command: one entry point for officers, operators and researchers."""

from __future__ import annotations

import typer

from cli.access import access_app, node_access_app
from cli.ca import ca_app
from cli.officer import app as node_app
from cli.operator import coordinator_app, nodes_app, operator_app, study_app
from cli.researcher import catalog_app, job_app, model_app, researcher_app
from cli.review import review_app

app = typer.Typer(help="scifed — federated sharing of scientific data.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(ca_app, name="ca")
app.add_typer(coordinator_app, name="coordinator")
node_app.add_typer(review_app, name="review")
app.add_typer(node_app, name="node")
app.add_typer(researcher_app, name="researcher")
app.add_typer(operator_app, name="operator")
app.add_typer(catalog_app, name="catalog")
app.add_typer(nodes_app, name="nodes")
app.add_typer(study_app, name="study")
app.add_typer(job_app, name="job")
app.add_typer(model_app, name="model")
app.add_typer(access_app, name="access")
node_app.add_typer(node_access_app, name="access")


@app.command()
def demo(out: str = typer.Option("demo-out", help="Working directory for the demo"),
         keep: bool = typer.Option(False, help="Keep the federation running until Ctrl-C")) -> None:
    """Start a coordinator and three nodes on loopback with real data, and search them."""
    from harness.demo import run

    run(out, keep=keep)


def main() -> None:
    app()
