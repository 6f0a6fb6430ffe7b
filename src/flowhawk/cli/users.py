"""``flowhawk users add|list|revoke|passwd`` and ``flowhawk tokens add|list|revoke``: who may
use ``flowhawk serve``.

Both work on ``DATA/auth.json`` directly, with or without the service running: the
service re-reads the file when it changes, so a token added here works at once. A
token's text is printed once, on its own line on stdout (``-q``: nothing else), so
scripts capture it with ``TOKEN=$(flowhawk tokens add --user bob -q)``. Passwords are
read from stdin (``--password-stdin``, one line) or typed at a hidden prompt, never
given as arguments, which other users of the machine could see.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from flowhawk.cli import app, make_console
from flowhawk.errors import AuthError
from flowhawk.serve.auth import MIN_PASSWORD, AuthStore
from flowhawk.settingtypes import parse_duration

users_app = typer.Typer(
    help="Users of flowhawk serve: roles (viewer, analyst, admin), sites, passwords.",
    no_args_is_help=True,
)
tokens_app = typer.Typer(
    help="API tokens of flowhawk serve (Authorization: Bearer <token>).", no_args_is_help=True
)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
console = make_console()
err = make_console(stderr=True)

DataOpt = typer.Option(Path("data"), "--data", "-d", help="Data directory (holds auth.json).")


class RoleChoice(StrEnum):
    viewer = "viewer"
    analyst = "analyst"
    admin = "admin"


def _password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise AuthError("--password-stdin: no password on standard input")
        return line
    if not sys.stdin.isatty():
        raise AuthError("no terminal to ask for the password: give it with --password-stdin")
    return typer.prompt(
        f"Password (at least {MIN_PASSWORD} characters)",
        hide_input=True,
        confirmation_prompt=True,
    )


def _table(*columns: str) -> Table:
    t = Table(show_edge=False)
    for col in columns:
        t.add_column(col)
    return t


@users_app.command("add")
def add_user(
    name: str = typer.Argument(
        ..., metavar="NAME", help="User name: letters, digits and . _ @ - (1-64)."
    ),
    role: RoleChoice = typer.Option(..., "--role", "-r", help="viewer, analyst or admin."),
    site: list[str] = typer.Option(
        [], "--site", "-s", help="A site the user sees; repeatable; none: all sites."
    ),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read a password (one line) from stdin."
    ),
    data: Path = DataOpt,
) -> None:
    """Add a user with a role and the sites it sees.

    Viewers read, analysts also change events' status, verdict and comment, admins
    manage everything and always see all sites. Without --password-stdin the user has
    no password and signs in with tokens only (flowhawk tokens add)."""
    password = _password(True) if password_stdin else None
    AuthStore(data).add_user(name, role.value, site, password)
    scope = ", ".join(site) if site else "all sites"
    err.print(f"user {name} added: {role.value}, {scope}", highlight=False)


@users_app.command("list")
def list_users(data: Path = DataOpt) -> None:
    """Users with role, sites, whether a password is set, disabled, active tokens."""
    t = _table("name", "role", "sites", "password", "disabled", "tokens")
    for u in AuthStore(data).list_users():
        t.add_row(
            u["name"],
            u["role"],
            ", ".join(u["sites"]) or "all",
            "yes" if u["password"] else "no",
            "yes" if u["disabled"] else "no",
            str(u["tokens"]),
        )
    console.print(t)


@users_app.command("revoke")
def revoke_user(
    name: str = typer.Argument(..., metavar="NAME", help="The user to disable."),
    data: Path = DataOpt,
) -> None:
    """Disable a user: it can no longer sign in and all its tokens stop working at once."""
    AuthStore(data).disable_user(name)
    err.print(f"user {name} disabled; its tokens are revoked", highlight=False)


@users_app.command("passwd")
def passwd(
    name: str = typer.Argument(..., metavar="NAME", help="The user."),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="Read the password (one line) from stdin."
    ),
    data: Path = DataOpt,
) -> None:
    """Set a user's password (at least 12 characters), read from stdin or asked for."""
    store = AuthStore(data)
    if store.get_user(name) is None:
        raise AuthError(f"no user {name!r}")
    store.set_password(name, _password(password_stdin))
    err.print(f"password of {name} set", highlight=False)


@tokens_app.command("add")
def add_token(
    user: str = typer.Option(..., "--user", "-u", help="The user the token acts as."),
    label: str = typer.Option("", "--label", "-l", help="What the token is for."),
    expires: str | None = typer.Option(
        None, "--expires", "-e", help="Lifetime, e.g. 30d or 12h; default: never expires."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the token."),
    data: Path = DataOpt,
) -> None:
    """Create an API token and print it once (it is stored only as a hash)."""
    until = None
    if expires is not None:
        try:
            seconds = parse_duration(expires)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--expires") from None
        if seconds <= 0:
            raise typer.BadParameter("a lifetime must be positive", param_hint="--expires")
        until = datetime.now(UTC) + timedelta(seconds=seconds)
    store = AuthStore(data)
    token = store.add_token(user, label, until)
    typer.echo(token)
    if not quiet:
        when = f"expires {until:%Y-%m-%d %H:%M} UTC" if until else "never expires"
        err.print(
            f"token {token[3:11]} for {user}, {when}; shown once: store it now",
            highlight=False,
        )


@tokens_app.command("list")
def list_tokens(
    user: str | None = typer.Option(None, "--user", "-u", help="Only this user's tokens."),
    data: Path = DataOpt,
) -> None:
    """Tokens and sign-in sessions: id, user, label, kind, created, expires, state."""
    t = _table("id", "user", "label", "kind", "created", "expires", "state")
    for tok in AuthStore(data).list_tokens(user):
        state = "revoked" if tok["revoked"] else "expired" if tok["expired"] else "active"
        t.add_row(
            tok["id"],
            tok["user"],
            tok["label"] or "-",
            tok["kind"],
            tok["created"],
            tok["expires"] or "never",
            state,
        )
    console.print(t)


@tokens_app.command("revoke")
def revoke_token(
    token_id: str = typer.Argument(..., metavar="ID", help="The token's id (tokens list)."),
    data: Path = DataOpt,
) -> None:
    """Revoke a token: it stops working at once."""
    AuthStore(data).revoke_token(token_id)
    err.print(f"token {token_id} revoked", highlight=False)
