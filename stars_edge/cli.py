"""The ``stars-edge`` command line: thin commands that parse, validate and call one library function.

Domain errors (``StarsEdgeError``) become a one-line message on stderr and exit code 1 here, at the edge,
and nowhere else. Command modules import heavy libraries (torch, onnxruntime) lazily inside the command,
so ``stars-edge --help`` is instant and ``stars-edge run`` works on a device without PyTorch.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import typer

from stars_edge import __version__
from stars_edge.commands import build_engines as build_engines_cmd
from stars_edge.commands import data as data_cmd
from stars_edge.commands import demo as demo_cmd
from stars_edge.commands import evaluate as evaluate_cmd
from stars_edge.commands import run as run_cmd
from stars_edge.commands import run_batch as run_batch_cmd
from stars_edge.errors import Interrupted, StarsEdgeError

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


def _show_warnings_plainly() -> None:
    """Show each ``UserWarning`` (the library's warnings, e.g. ``--allow-out-of-range``) as one line
    ``warning: <message>`` on stderr, without Python's file, line number and source line; other categories
    (deprecations, numpy's RuntimeWarnings) keep Python's format, which points at the code at fault."""
    default = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not issubclass(category, UserWarning):
            default(message, category, filename, lineno, file, line)
            return
        stream = sys.stderr if file is None else file
        if stream is not None:  # None under pythonw; a closed or full stream drops it, as Python does
            with contextlib.suppress(OSError):
                text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
                stream.write(f"warning: {text}\n")

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: usage errors are click's (exit 2); domain errors: one line, exit 1; an
    interrupted command: one line saying where it stopped and the command that continues it, exit 130."""
    _show_warnings_plainly()
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        app(args=args)
    except Interrupted as exc:
        typer.secho(f"interrupted: {exc}; continue with: {resume_command(args)}", err=True, fg="yellow")
        sys.exit(exc.exit_code)
    except StarsEdgeError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:  # an I/O error no library code put into words: still one line, naming the file
        where = f"{exc.filename}: " if exc.filename is not None else ""
        typer.secho(f"error: {where}{exc.strerror or exc}", err=True, fg="red")
        sys.exit(1)


def resume_command(args: Sequence[str]) -> str:
    """The command line that continues an interrupted command: the same arguments with ``--resume``, and
    without ``--overwrite`` (which would discard what the interrupted run kept)."""
    kept = [arg for arg in args if arg != "--overwrite"]
    if "--resume" not in kept:
        kept.append("--resume")
    started = Path(sys.argv[0])
    program = "python -m stars_edge" if started.parts[-2:] == ("stars_edge", "__main__.py") else "stars-edge"
    return f"{program} {shlex.join(kept)}"
