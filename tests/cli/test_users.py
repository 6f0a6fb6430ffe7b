"""``flowhawk users`` and ``flowhawk tokens``: what an operator types, what the store holds."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from flowhawk.cli import app
from flowhawk.serve.auth import AuthStore

PASSWORD = "a long enough passphrase"
runner = CliRunner()


def _cli(*args: str, stdin: str | None = None):
    return runner.invoke(app, list(args), input=stdin, env={"COLUMNS": "200"})


def _fh(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """As a user runs it: a process, with the CLI's own error handler and exit codes."""
    return subprocess.run(
        [sys.executable, "-m", "flowhawk", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def _rows(table: str) -> dict[str, list[str]]:
    """A printed table's rows (after the header and its rule) by their first cell."""
    rows = [[c.strip() for c in line.split("│")] for line in table.splitlines()[2:]]
    return {r[0]: r for r in rows if r[0]}


def test_add_list_token_and_revoke(tmp_path):
    data = str(tmp_path)
    res = _cli("users", "add", "ana", "--role", "analyst", "--site", "hq", "--site", "lab",
               "--password-stdin", "--data", data, stdin=PASSWORD + "\n")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "user ana added: analyst, hq, lab" in res.stderr
    assert _cli("users", "add", "vera", "--role", "viewer", "-d", data).exit_code == 0
    store = AuthStore(tmp_path)
    assert store.login("ana", PASSWORD, ttl=60) is not None  # the password from stdin

    res = _cli("tokens", "add", "--user", "vera", "--label", "grafana", "--expires", "30d",
               "-q", "--data", data)  # fmt: skip
    assert res.exit_code == 0, res.output
    token = res.stdout.strip()
    assert res.stdout == token + "\n" and res.stderr == ""
    who = store.authenticate(token)
    assert who.user == "vera" and who.role == "viewer" and who.sites is None
    (row,) = store.list_tokens("vera")
    assert row["label"] == "grafana" and row["expires"] is not None

    res = _cli("tokens", "add", "--user", "ana", "--data", data)
    assert res.exit_code == 0
    ana_token = res.stdout.strip()
    assert store.authenticate(ana_token).sites == frozenset({"hq", "lab"})
    assert f"token {ana_token[3:11]} for ana, never expires" in res.stderr

    res = _cli("users", "list", "--data", data)
    assert res.exit_code == 0
    header = [c.strip() for c in res.stdout.splitlines()[0].split("┃")]
    assert header == ["name", "role", "sites", "password", "disabled", "tokens"]
    rows = _rows(res.stdout)
    assert rows["ana"] == ["ana", "analyst", "hq, lab", "yes", "no", "1"]
    assert rows["vera"] == ["vera", "viewer", "all", "no", "no", "1"]

    res = _cli("tokens", "list", "--user", "vera", "--data", data)
    assert res.exit_code == 0 and token not in res.stdout  # the text is never shown again
    (listed,) = _rows(res.stdout).values()
    assert listed[:4] == [token[3:11], "vera", "grafana", "api"] and listed[-1] == "active"

    assert _cli("tokens", "revoke", token[3:11], "--data", data).exit_code == 0
    assert store.authenticate(token) is None
    assert _rows(_cli("tokens", "list", "--data", data).stdout)[token[3:11]][-1] == "revoked"

    assert _cli("users", "revoke", "ana", "--data", data).exit_code == 0
    assert store.authenticate(ana_token) is None
    assert store.login("ana", PASSWORD, ttl=60) is None
    assert _rows(_cli("users", "list", "-d", data).stdout)["ana"][-2:] == ["yes", "0"]


def test_passwd_sets_a_password_read_from_stdin(tmp_path):
    data = str(tmp_path)
    assert _cli("users", "add", "tom", "--role", "admin", "-d", data).exit_code == 0
    assert AuthStore(tmp_path).login("tom", PASSWORD, ttl=60) is None
    res = _cli("users", "passwd", "tom", "--password-stdin", "-d", data, stdin=PASSWORD + "\n")
    assert res.exit_code == 0, res.output
    assert AuthStore(tmp_path).authenticate(AuthStore(tmp_path).login("tom", PASSWORD, 60))


def test_a_token_captured_by_a_script_works(tmp_path):
    data = str(tmp_path)
    res = _fh("users", "add", "bob", "--role", "analyst", "--site", "a", "--data", data)
    assert res.returncode == 0, res.stderr
    res = _fh("tokens", "add", "--user", "bob", "-q", "--data", data)
    assert res.returncode == 0, res.stderr
    token = res.stdout.removesuffix("\n")
    assert "\n" not in token and token.startswith("fh_")
    assert AuthStore(tmp_path).authenticate(token).sites == frozenset({"a"})


def test_mistakes_fail_with_clear_messages(tmp_path):
    data = str(tmp_path)
    res = _cli("users", "add", "zed", "--role", "boss", "--data", data)
    assert res.exit_code == 2
    assert "'boss' is not one of 'viewer', 'analyst', 'admin'" in res.output
    assert not AuthStore(tmp_path).has_users()

    res = _cli("tokens", "add", "--user", "zed", "--expires", "soon", "--data", data)
    assert res.exit_code == 2 and "'soon' is not a duration" in res.output

    # errors of the store go through the CLI's handler: one line, no traceback
    res = _fh("users", "add", "zed", "--role", "viewer", "--password-stdin", "--data", data,
              stdin="short\n")  # fmt: skip
    assert res.returncode == 1
    assert "error: the password is too short: at least 12 characters" in res.stderr
    assert "Traceback" not in res.stderr
    assert _cli("users", "add", "zed", "--role", "viewer", "--data", data).exit_code == 0
    res = _fh("users", "add", "zed", "--role", "viewer", "--data", data)
    assert res.returncode == 1 and "error: user 'zed' already exists" in res.stderr
    res = _fh("tokens", "add", "--user", "nobody", "--data", data)
    assert res.returncode == 1 and "error: no user 'nobody'" in res.stderr
    assert res.stdout == ""
    res = _fh("tokens", "revoke", "deadbeef", "--data", data)
    assert res.returncode == 1 and "error: no token with id 'deadbeef'" in res.stderr
