"""The ``flowhawk`` command line: one Typer app, one module per command group."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.markup import escape

from flowhawk import __version__
from flowhawk.errors import FlowhawkError

app = typer.Typer(
    name="flowhawk",
    help="Network behavioral analytics: learn how every device, connection and port "
    "normally behaves, and explain what changed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def make_console(stderr: bool = False) -> Console:
    """A console; when output is not a terminal (a pipe, a file, CI) lines are not cut at 80."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=200)
    return console


err = make_console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flowhawk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every warning as it happens."),
) -> None:
    logging.basicConfig(
        level=logging.WARNING if verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


from flowhawk.cli import analyze as _analyze  # noqa: E402,F401  (registers commands)
from flowhawk.cli import c2 as _c2  # noqa: E402,F401
from flowhawk.cli import collect as _collect  # noqa: E402,F401
from flowhawk.cli import config_cmd as _config  # noqa: E402,F401
from flowhawk.cli import domains as _domains  # noqa: E402,F401
from flowhawk.cli import intel as _intel  # noqa: E402,F401
from flowhawk.cli import replay as _replay  # noqa: E402,F401
from flowhawk.cli import serve as _serve  # noqa: E402,F401
from flowhawk.cli import simulate as _simulate  # noqa: E402,F401
from flowhawk.cli import sql as _sql  # noqa: E402,F401
from flowhawk.cli import users as _users  # noqa: E402,F401


def main() -> None:
    """Entry point: run the app, print flowhawk errors without a traceback."""
    try:
        app()
    except FlowhawkError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
