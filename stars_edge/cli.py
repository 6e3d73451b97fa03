"""The ``stars-edge`` command line: thin commands that parse, validate and call one library function.

Domain errors (``StarsEdgeError``) become a one-line message on stderr and exit code 1 here, at the edge,
and nowhere else. Command modules import heavy libraries (torch, onnxruntime) lazily inside the command,
so ``stars-edge --help`` is instant and ``stars-edge run`` works on a device without PyTorch.
"""

from __future__ import annotations

import sys

import typer

from stars_edge import __version__
from stars_edge.commands import build_engines as build_engines_cmd
from stars_edge.commands import data as data_cmd
from stars_edge.commands import demo as demo_cmd
from stars_edge.commands import evaluate as evaluate_cmd
from stars_edge.commands import run as run_cmd
from stars_edge.commands import run_batch as run_batch_cmd
from stars_edge.errors import StarsEdgeError

app = typer.Typer(
    name="stars-edge",
    help="STARS missing-modality segmentation for remote sensing: train, build per-pattern engines, "
    "and run them tile by tile over large GeoTIFFs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"stars-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """STARS missing-modality segmentation for remote sensing, compiled for the edge."""


app.command("demo")(demo_cmd.demo)
app.command("build-engines")(build_engines_cmd.build_engines)
app.command("run")(run_cmd.run)
app.command("run-batch")(run_batch_cmd.run_batch)
app.command("eval")(evaluate_cmd.evaluate)
app.add_typer(data_cmd.app, name="data")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: usage errors are click's (exit 2); domain errors: one line, exit 1."""
    try:
        app(args=argv)
    except StarsEdgeError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
