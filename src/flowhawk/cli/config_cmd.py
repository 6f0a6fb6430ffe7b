"""``flowhawk config show|check``: print the effective configuration, or validate a file."""

from __future__ import annotations

from pathlib import Path

import tomli_w
import typer

from flowhawk import config as cfgmod
from flowhawk.cli import app, make_console

config_app = typer.Typer(help="Show or check the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")
out = make_console()


@config_app.command("show")
def show(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file."),
) -> None:
    """Print the effective configuration (file merged over defaults) as TOML."""
    cfg = cfgmod.load(config)
    typer.echo(tomli_w.dumps(cfgmod.effective(cfg)), nl=False)


@config_app.command("check")
def check(config: Path = typer.Argument(..., help="TOML config file to validate.")) -> None:
    """Validate a config file: unknown keys and bad values are reported; exit 2 if invalid."""
    cfgmod.load(config)
    out.print(f"{config}: ok")
