"""Users, tokens and sessions in DATA/auth.json: what authenticates, what is on disk."""

from __future__ import annotations

import hashlib
import json
import stat
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from flowhawk.errors import AuthError, StateError
from flowhawk.serve.auth import AuthStore, Principal

PASSWORD = "correct horse battery staple"


def _wait_until(check, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


def test_tokens_act_as_their_user_with_role_and_sites(tmp_path):
    store = AuthStore(tmp_path)
    store.add_user("alice", "analyst", ["b", "a"])
    store.add_user("root@corp", "admin")
    store.add_user("vic", "viewer")
    tok = store.add_token("alice", label="ci")
    assert tok.startswith("fh_") and len(tok) == 3 + 8 + 1 + 43
    who = store.authenticate(tok)
    assert who == Principal("alice", "analyst", frozenset({"a", "b"}), tok[3:11])
    assert who.can_write() and not who.is_admin()
    admin = store.authenticate(store.add_token("root@corp"))
    assert admin.is_admin() and admin.can_write() and admin.sites is None
    viewer = store.authenticate(store.add_token("vic"))
    assert not viewer.can_write() and viewer.sites is None  # no sites: every site
    rows = {r["id"]: r for r in store.list_tokens("alice")}
    assert rows[who.token_id] == {
        "id": who.token_id,
        "user": "alice",
        "label": "ci",
        "kind": "api",
        "created": rows[who.token_id]["created"],
        "expires": None,
        "revoked": False,
        "expired": False,
    }
    assert len(store.list_tokens()) == 3


def test_wrong_unknown_revoked_and_expired_tokens_fail(tmp_path):
    store = AuthStore(tmp_path)
    store.add_user("bob", "viewer")
    tok = store.add_token("bob")
    tid = tok[3:11]
    forged = tok[:-1] + ("A" if tok[-1] != "A" else "B")
    unknown = f"fh_{'0' * 8 if tid != '0' * 8 else '1' * 8}_{tok[12:]}"
    for bad in (forged, unknown, "", "fh_", tok + "x", "Bearer " + tok, tok.upper()):
        assert store.authenticate(bad) is None, bad
    assert store.authenticate(tok) is not None
    store.revoke_token(tid)
    assert store.authenticate(tok) is None
    assert store.list_tokens()[0]["revoked"] is True
    short = store.add_token("bob", expires=datetime.now(UTC) + timedelta(seconds=0.4))
    assert store.authenticate(short) is not None
    _wait_until(lambda: store.authenticate(short) is None)
    expired = {t["id"]: t["expired"] for t in store.list_tokens()}
    assert expired == {tid: False, short[3:11]: True}
    with pytest.raises(AuthError, match="no token with id 'ffffffff'"):
        store.revoke_token("ffffffff")
    with pytest.raises(AuthError, match="not in the future"):
        store.add_token("bob", expires=datetime.now(UTC) - timedelta(seconds=1))


def test_a_disabled_users_tokens_stop_at_once(tmp_path):
    store = AuthStore(tmp_path)
    store.add_user("eve", "analyst", password=PASSWORD)
    api = store.add_token("eve")
    session = store.login("eve", PASSWORD, ttl=600)
    assert store.authenticate(api) and store.authenticate(session)
    store.disable_user("eve")
    assert store.authenticate(api) is None and store.authenticate(session) is None
    assert store.login("eve", PASSWORD, ttl=600) is None
    with pytest.raises(AuthError, match="'eve' is disabled"):
        store.add_token("eve")
    (eve,) = store.list_users()
    assert eve["disabled"] is True and eve["tokens"] == 0 and eve["sessions"] == 0
    store.enable_user("eve")
    assert store.authenticate(api) is None  # old tokens stay revoked
    assert store.authenticate(store.add_token("eve")).user == "eve"


def test_only_hashes_reach_the_disk_with_mode_0600(tmp_path):
    store = AuthStore(tmp_path)
    store.add_user("carol", "viewer", ["hq"], password=PASSWORD)
    token = store.add_token("carol", label="grafana")
    session = store.login("carol", PASSWORD, ttl=600)
    path = tmp_path / "auth.json"
    text = path.read_text()
    for secret in (PASSWORD, token, token[12:], session, session[12:]):
        assert secret not in text
    doc = json.loads(text)
    pw = doc["users"]["carol"]["password"]
    assert pw["scheme"] == "scrypt" and {"n", "r", "p", "salt", "hash"} <= set(pw)
    assert doc["tokens"][token[3:11]]["sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    users = store.list_users()
    assert users == [
        {
            "name": "carol",
            "role": "viewer",
            "sites": ["hq"],
            "password": True,
            "created": users[0]["created"],
            "disabled": False,
            "tokens": 1,
            "sessions": 1,
        }
    ]
    assert datetime.fromisoformat(users[0]["created"]).tzinfo is not None


def test_a_second_store_sees_changes_without_restart(tmp_path):
    service = AuthStore(tmp_path)  # the running service
    assert service.bootstrap_admin() is not None
    shell = AuthStore(tmp_path)  # `flowhawk tokens add` in another process
    shell.add_user("dave", "analyst", ["a"])
    tok = shell.add_token("dave")
    assert service.authenticate(tok).user == "dave"
    shell.update_user("dave", role="viewer", sites=["b"])
    who = service.authenticate(tok)
    assert who.role == "viewer" and who.sites == frozenset({"b"})
    shell.revoke_token(tok[3:11])
    assert service.authenticate(tok) is None
    # and the service's own writes keep the shell's: no lost update
    service.add_user("erin", "viewer")
    assert {u["name"] for u in AuthStore(tmp_path).list_users()} == {"admin", "dave", "erin"}


def test_concurrent_writers_lose_nothing(tmp_path):
    stores = [AuthStore(tmp_path) for _ in range(4)]
    stores[0].add_user("f", "viewer")
    out: list[str] = []

    def work(store: AuthStore) -> None:
        for _ in range(10):
            out.append(store.add_token("f"))

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(out) == 40
    fresh = AuthStore(tmp_path)
    assert len(fresh.list_tokens("f")) == 40
    assert all(fresh.authenticate(t).user == "f" for t in out)


def test_bootstrap_creates_the_admin_once(tmp_path):
    store = AuthStore(tmp_path)
    assert not store.has_users()
    token = store.bootstrap_admin()
    who = store.authenticate(token)
    assert who.user == "admin" and who.is_admin() and who.sites is None
    assert store.list_tokens()[0]["label"] == "initial admin token"
    assert store.bootstrap_admin() is None
    assert AuthStore(tmp_path).bootstrap_admin() is None
    assert store.has_users() and len(store.list_tokens()) == 1


def test_login_logout_and_session_expiry(tmp_path):
    store = AuthStore(tmp_path)
    store.add_user("gus", "analyst", ["plant"], password=PASSWORD)
    store.add_user("tok-only", "viewer")
    assert store.login("gus", "wrong password!!", ttl=60) is None
    assert store.login("nobody", PASSWORD, ttl=60) is None
    assert store.login("tok-only", PASSWORD, ttl=60) is None
    session = store.login("gus", PASSWORD, ttl=60)
    who = store.authenticate(session)
    assert who.user == "gus" and who.sites == frozenset({"plant"})
    (row,) = store.list_tokens("gus")
    assert row["kind"] == "session"
    assert AuthStore(tmp_path).authenticate(session).user == "gus"  # survives a restart
    store.logout(session)
    assert store.authenticate(session) is None
    store.logout(session)  # again, and nonsense: no error
    store.logout("not a token")
    short = store.login("gus", PASSWORD, ttl=0.3)
    assert store.authenticate(short) is not None
    _wait_until(lambda: store.authenticate(short) is None)
    store.add_user("hank", "viewer")  # any write prunes ended sessions
    assert store.list_tokens("gus") == []
    assert '"session"' not in (tmp_path / "auth.json").read_text()
    with pytest.raises(AuthError, match="positive"):
        store.login("gus", PASSWORD, ttl=0)


def test_passwords_and_names_are_checked(tmp_path):
    store = AuthStore(tmp_path)
    with pytest.raises(AuthError, match="at least 12 characters"):
        store.add_user("ivy", "viewer", password="short")
    assert not store.has_users()
    store.add_user("ivy", "viewer")
    with pytest.raises(AuthError, match="at least 12 characters"):
        store.set_password("ivy", "elevenchars")
    store.set_password("ivy", "twelve chars")
    assert store.authenticate(store.login("ivy", "twelve chars", ttl=60)).user == "ivy"
    with pytest.raises(AuthError, match="'ivy' already exists"):
        store.add_user("ivy", "admin")
    with pytest.raises(AuthError, match="user name 'a b' is not valid"):
        store.add_user("a b", "viewer")
    with pytest.raises(AuthError, match="user name 'x\\\\n' is not valid"):
        store.add_user("x\n", "viewer")
    with pytest.raises(AuthError, match="role 'root' is not one of viewer, analyst, admin"):
        store.add_user("jim", "root")
    with pytest.raises(AuthError, match="admin always sees every site"):
        store.add_user("jim", "admin", ["a"])
    with pytest.raises(AuthError, match="no user 'nobody'"):
        store.set_password("nobody", PASSWORD)
    with pytest.raises(AuthError, match="no user 'nobody'"):
        store.add_token("nobody")
    with pytest.raises(AuthError, match="no user 'nobody'"):
        store.disable_user("nobody")


@pytest.mark.parametrize(
    ("sites", "requested", "scope"),
    [
        (None, None, None),
        (None, [], None),
        (None, ["b", "a", "b"], ["b", "a"]),
        (frozenset({"a", "c"}), None, ["a", "c"]),
        (frozenset({"a", "c"}), ["c", "x"], ["c"]),
        (frozenset({"a"}), ["b"], []),
    ],
)
def test_scope(sites, requested, scope):
    who = Principal("u", "analyst", sites, "00000000")
    assert who.scope(requested) == scope


def test_sees():
    scoped = Principal("u", "viewer", frozenset({"a"}), "00000000")
    assert scoped.sees("a") and not scoped.sees("b") and not scoped.sees(None)
    everywhere = Principal("u", "viewer", None, "00000000")
    assert everywhere.sees("b") and everywhere.sees(None)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "unexpected content"),
        (
            '{"version": 1, "users": {"x": {"role": "root", "created": "2024-01-01T00:00:00Z"}}}',
            "users.x.role",
        ),
        (
            '{"version": 1, "tokens": {"abcd0123": {"user": "ghost", "created": '
            '"2024-01-01T00:00:00Z", "sha256": "' + "0" * 64 + '"}}}',
            "unknown user 'ghost'",
        ),
        ('{"version": 7}', "version"),
    ],
)
def test_a_corrupt_file_is_a_state_error_naming_it(tmp_path, content, what):
    path = tmp_path / "auth.json"
    path.write_text(content)
    store = AuthStore(tmp_path)
    with pytest.raises(StateError) as info:
        store.authenticate("fh_00000000_" + "A" * 43)
    assert str(path) in str(info.value) and what in str(info.value)
    with pytest.raises(StateError, match=r"auth\.json"):
        store.add_user("x", "viewer")
    assert path.read_text() == content  # never overwritten
