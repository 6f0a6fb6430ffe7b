"""Users, API tokens and sign-in sessions of ``flowhawk serve``, kept in ``DATA/auth.json``.

Secrets never reach the disk:

- A password is stored as its scrypt hash (``hashlib.scrypt``, a random 16-byte salt,
  the cost parameters kept beside the hash so they can be raised later without breaking
  old passwords) and checked with ``hmac.compare_digest``. Passwords are chosen by
  people, so a slow, memory-hard hash is what stands between a stolen file and them.
- A token is ``fh_<id>_<secret>``: ``id`` is 8 lowercase hex characters, public, shown
  in lists and used to revoke; ``secret`` is ``secrets.token_urlsafe(32)`` (256 random
  bits). Only the SHA-256 of the whole token is stored. A fast hash is the right one
  here: guessing a 256-bit secret is hopeless at any speed, while every API request
  checks a token, so a slow hash would only cost the service time.

Sessions (``POST /api/v1/login``) are tokens of kind ``session`` with an expiry, stored
in the same file so they survive a restart; expired or ended sessions are pruned
whenever the file is written. A token acts with its user's current role and sites, and
stops working the moment the token is revoked, expires or its user is disabled.

The file is written atomically (a temporary file with mode 0600, then ``os.replace``)
while holding an exclusive ``flock`` on ``DATA/.auth.json.lock``, so two processes
changing it at once (the service signing someone in, ``flowhawk tokens add`` in a
shell) do not lose each other's change. Every read checks the file's inode, mtime and
size and re-reads it when they changed: a token added from the command line works
against the running service without a restart. A lock makes one store safe to share
between threads.
"""

from __future__ import annotations

import fcntl
import hmac
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from flowhawk.errors import AuthError, StateError
from flowhawk.serve.auth_records import (
    DECOY,
    NAME_RE,
    TOKEN_RE,
    AuthDoc,
    TokenRecord,
    UserRecord,
    digest,
    hash_password,
    now_utc,
    verify_password,
)
from flowhawk.serve.principal import ROLES, Principal, Role

AUTH_FILE = "auth.json"
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
MAX_LABEL = 200
KINDS = ("api", "session")
INITIAL_ADMIN = "admin"
INITIAL_TOKEN_LABEL = "initial admin token"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise AuthError(
            f"user name {name!r} is not valid: 1-64 letters, digits and . _ @ - characters"
        )


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AuthError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AuthError(f"the password is too long: at most {MAX_PASSWORD} characters")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise AuthError(f"role {role!r} is not one of {', '.join(ROLES)}")


def _clean_sites(role: str, sites: list[str] | tuple[str, ...]) -> list[str]:
    if isinstance(sites, str):
        sites = [sites]
    for site in sites:
        if not isinstance(site, str) or not site or site.strip() != site or len(site) > 128:
            raise AuthError(f"site {site!r} is not valid: 1-128 characters, no outer spaces")
    if role == "admin" and sites:
        raise AuthError("an admin always sees every site: give no sites for the admin role")
    return sorted(set(sites))


class AuthStore:
    """The users and tokens of one data directory (``DATA/auth.json``)."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / AUTH_FILE
        self._lock_path = self.path.with_name(f".{AUTH_FILE}.lock")
        self._lock = threading.RLock()
        self._doc = AuthDoc()
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime, size) read last

    # ---- file ----

    def _current(self) -> AuthDoc:
        """The document as on disk now, re-read only when the file changed."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                self._doc, self._seen = AuthDoc(), None
                return self._doc
            except OSError as exc:
                raise self._state_error(f"cannot be read ({exc.strerror})") from None
            if (st.st_ino, st.st_mtime_ns, st.st_size) != self._seen:
                self._read()
            return self._doc

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                raw = fh.read()
        except OSError as exc:
            raise self._state_error(f"cannot be read ({exc.strerror})") from None
        try:
            doc = AuthDoc.model_validate_json(raw)
        except ValidationError as exc:
            raise self._state_error(_describe(exc)) from None
        self._doc, self._seen = doc, (st.st_ino, st.st_mtime_ns, st.st_size)

    def _state_error(self, what: str) -> StateError:
        return StateError(
            f"{self.path}: {what}; restore it from a backup, or move it away to start "
            "afresh (every user and token is then lost)"
        )

    @contextmanager
    def _writing(self) -> Iterator[AuthDoc]:
        """A copy of the current document to change; written back if it was changed (and
        the body did not raise), with other processes' writers locked out meanwhile."""
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StateError(f"{self.path}: cannot be written ({exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                before = self._current()
                doc = before.model_copy(deep=True)
                yield doc
                if doc != before:
                    try:
                        self._write(doc)
                    except OSError as exc:
                        raise StateError(f"{self.path}: cannot be written ({exc})") from None
            finally:
                os.close(fd)  # releases the flock

    def _write(self, doc: AuthDoc) -> None:
        now = now_utc()
        doc.tokens = {  # in creation order
            tid: tok for tid, tok in doc.tokens.items() if tok.kind != "session" or tok.active(now)
        }
        doc.users = dict(sorted(doc.users.items()))
        tmp = self.path.with_name(f".{AUTH_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb", closefd=False) as fh:
                fh.write(doc.model_dump_json(indent=1).encode("utf-8") + b"\n")
                fh.flush()
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        st = os.stat(self.path)
        self._doc, self._seen = doc, (st.st_ino, st.st_mtime_ns, st.st_size)

    # ---- users ----

    def has_users(self) -> bool:
        return bool(self._current().users)

    def add_user(
        self,
        name: str,
        role: Role,
        sites: list[str] | tuple[str, ...] = (),
        password: str | None = None,
    ) -> None:
        """Add a user; without a password it signs in with tokens only."""
        _check_name(name)
        _check_role(role)
        clean = _clean_sites(role, sites)
        if password is not None:
            _check_password(password)
        hashed = hash_password(password) if password is not None else None
        with self._writing() as doc:
            if name in doc.users:
                raise AuthError(f"user {name!r} already exists")
            doc.users[name] = UserRecord(
                role=role, sites=clean, password=hashed, created=now_utc().replace(microsecond=0)
            )

    def update_user(
        self, name: str, role: Role | None = None, sites: list[str] | None = None
    ) -> None:
        """Change a user's role and/or sites (a user becoming admin loses its site list)."""
        with self._writing() as doc:
            user = self._user(doc, name)
            if role is not None:
                _check_role(role)
                user.role = role
                if role == "admin" and sites is None:
                    user.sites = []
            if sites is not None:
                user.sites = _clean_sites(user.role, sites)

    def set_password(self, name: str, password: str) -> None:
        _check_password(password)
        self._user(self._current(), name)  # fail before spending time on the hash
        hashed = hash_password(password)
        with self._writing() as doc:
            self._user(doc, name).password = hashed

    def disable_user(self, name: str) -> None:
        """Revoke a user: it can no longer sign in, and all its tokens are revoked."""
        with self._writing() as doc:
            self._user(doc, name).disabled = True
            for tok in doc.tokens.values():
                if tok.user == name:
                    tok.revoked = True

    def enable_user(self, name: str) -> None:
        """Let a disabled user sign in again (its old tokens stay revoked)."""
        with self._writing() as doc:
            self._user(doc, name).disabled = False

    def get_user(self, name: str) -> dict | None:
        doc = self._current()
        return self._user_dict(doc, name, now_utc()) if name in doc.users else None

    def list_users(self) -> list[dict]:
        """Every user: name, role, sites, password (set or not), created, disabled, and the
        numbers of its active api tokens and sessions. No hashes."""
        doc, now = self._current(), now_utc()
        return [self._user_dict(doc, name, now) for name in sorted(doc.users)]

    @staticmethod
    def _user_dict(doc: AuthDoc, name: str, now: datetime) -> dict:
        user = doc.users[name]
        mine = [t for t in doc.tokens.values() if t.user == name and t.active(now)]
        return {
            "name": name,
            "role": user.role,
            "sites": list(user.sites),
            "password": user.password is not None,
            "created": user.model_dump(mode="json")["created"],
            "disabled": user.disabled,
            "tokens": sum(t.kind == "api" for t in mine),
            "sessions": sum(t.kind == "session" for t in mine),
        }

    @staticmethod
    def _user(doc: AuthDoc, name: str) -> UserRecord:
        try:
            return doc.users[name]
        except KeyError:
            raise AuthError(f"no user {name!r}") from None

    def bootstrap_admin(self) -> str | None:
        """With no users yet: create user ``admin`` (role admin) and an api token for it,
        returned once; otherwise None."""
        with self._writing() as doc:
            if doc.users:
                return None
            doc.users[INITIAL_ADMIN] = UserRecord(
                role="admin", created=now_utc().replace(microsecond=0)
            )
            return self._new_token(doc, INITIAL_ADMIN, INITIAL_TOKEN_LABEL, None, "api")

    # ---- tokens ----

    def add_token(
        self, user: str, label: str = "", expires: datetime | None = None, kind: str = "api"
    ) -> str:
        """A new token for ``user``; its text is returned here only, never stored. A naive
        ``expires`` is taken as UTC."""
        if kind not in KINDS:
            raise AuthError(f"token kind {kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(label, str) or len(label) > MAX_LABEL:
            raise AuthError(f"a token label is text of at most {MAX_LABEL} characters")
        if expires is not None:
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
            if expires <= now_utc():
                raise AuthError(f"the expiry {expires.isoformat()} is not in the future")
        with self._writing() as doc:
            if self._user(doc, user).disabled:
                raise AuthError(f"user {user!r} is disabled")
            return self._new_token(doc, user, label, expires, kind)

    @staticmethod
    def _new_token(doc: AuthDoc, user: str, label: str, expires: datetime | None, kind: str) -> str:
        tid = secrets.token_hex(4)
        while tid in doc.tokens:
            tid = secrets.token_hex(4)
        text = f"fh_{tid}_{secrets.token_urlsafe(32)}"
        doc.tokens[tid] = TokenRecord(
            user=user,
            label=label,
            kind=kind,
            created=now_utc().replace(microsecond=0),
            expires=expires,
            sha256=digest(text),
        )
        return text

    def list_tokens(self, user: str | None = None) -> list[dict]:
        """Tokens (of ``user``, or all) in creation order: id, user, label, kind, created,
        expires, revoked, expired. No hashes."""
        doc, now = self._current(), now_utc()
        out = []
        for tid, tok in doc.tokens.items():
            if user is not None and tok.user != user:
                continue
            row = {"id": tid, **tok.model_dump(mode="json", exclude={"sha256"})}
            row["expired"] = tok.expires is not None and tok.expires <= now
            out.append(row)
        return out

    def revoke_token(self, token_id: str) -> None:
        with self._writing() as doc:
            if token_id not in doc.tokens:
                raise AuthError(f"no token with id {token_id!r}")
            doc.tokens[token_id].revoked = True

    def authenticate(self, token: str) -> Principal | None:
        """The principal a token acts as, or None when the token is malformed, unknown,
        revoked, expired or its user is disabled."""
        m = TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
        if m is None:
            return None
        tid, wanted = m.group(1), digest(token)
        doc = self._current()
        tok = doc.tokens.get(tid)
        matches = hmac.compare_digest(tok.sha256 if tok else "0" * 64, wanted)
        if tok is None or not matches or not tok.active(now_utc()):
            return None
        user = doc.users.get(tok.user)
        if user is None or user.disabled:
            return None
        everywhere = user.role == "admin" or not user.sites
        return Principal(
            user=tok.user,
            role=user.role,
            sites=None if everywhere else frozenset(user.sites),
            token_id=tid,
        )

    # ---- sessions ----

    def login(self, user: str, password: str, ttl: float) -> str | None:
        """A session token lasting ``ttl`` seconds, or None for an unknown or disabled
        user, a user without a password, or a wrong password. Each case checks one
        password hash, so they take about as long."""
        if ttl <= 0:
            raise AuthError(f"a session lasts a positive time, not {ttl} s")
        rec = self._current().users.get(user) if isinstance(user, str) else None
        stored = rec.password if rec is not None and not rec.disabled else None
        matches = isinstance(password, str) and verify_password(password, stored or DECOY)
        if stored is None or not matches:
            return None
        try:
            return self.add_token(user, "sign-in", now_utc() + timedelta(seconds=ttl), "session")
        except AuthError:  # disabled or removed meanwhile
            return None

    def logout(self, token: str) -> None:
        """End the session (or revoke the token) ``token``; unknown tokens are ignored."""
        found = self.authenticate(token)
        if found is None:
            return
        with self._writing() as doc:
            if found.token_id in doc.tokens:
                doc.tokens[found.token_id].revoked = True


def _describe(exc: ValidationError) -> str:
    errors = exc.errors()
    parts = []
    for e in errors[:3]:
        where = ".".join(str(x) for x in e["loc"])
        parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    if errors and errors[0]["type"] == "json_invalid":
        return f"is not valid JSON ({errors[0].get('ctx', {}).get('error', 'unreadable')})"
    return "has unexpected content: " + "; ".join(parts) + more
