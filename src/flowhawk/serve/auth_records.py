"""What ``DATA/auth.json`` holds (users, tokens, password hashes) and how secrets are hashed.

Passwords: scrypt (memory-hard, parameters stored beside each hash so they can be raised
later), compared in constant time. Tokens: SHA-256 of the whole token (256 random bits
make a fast hash the right one). See :mod:`flowhawk.serve.auth_store` for the store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from flowhawk.serve.principal import Role

# OWASP's scrypt setting of equal strength to N=2^17, r=8, p=1 with a quarter of the
# memory (32 MiB); about 0.3 s per hash on one core.
SCRYPT = {"n": 2**15, "r": 8, "p": 3}

NAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
TOKEN_RE = re.compile(r"fh_([0-9a-f]{8})_([A-Za-z0-9_-]{43})")
TOKEN_ID_RE = re.compile(r"[0-9a-f]{8}")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PasswordHash(_Record):
    scheme: Literal["scrypt"] = "scrypt"
    n: int = Field(ge=2**10, le=2**20)
    r: int = Field(ge=1, le=32)
    p: int = Field(ge=1, le=16)
    salt: str
    hash: str


class UserRecord(_Record):
    role: Role
    sites: list[str] = []
    password: PasswordHash | None = None
    created: AwareDatetime
    disabled: bool = False


class TokenRecord(_Record):
    user: str
    label: str = ""
    kind: Literal["api", "session"] = "api"
    created: AwareDatetime
    expires: AwareDatetime | None = None
    revoked: bool = False
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    def active(self, now: datetime) -> bool:
        return not self.revoked and (self.expires is None or self.expires > now)


class AuthDoc(_Record):
    version: Literal[1] = 1
    users: dict[str, UserRecord] = {}
    tokens: dict[str, TokenRecord] = {}

    @model_validator(mode="after")
    def _consistent(self) -> AuthDoc:
        for name in self.users:
            if not NAME_RE.fullmatch(name):
                raise ValueError(f"user name {name!r} is not valid")
        for tid, tok in self.tokens.items():
            if not TOKEN_ID_RE.fullmatch(tid):
                raise ValueError(f"token id {tid!r} is not 8 lowercase hex characters")
            if tok.user not in self.users:
                raise ValueError(f"token {tid} belongs to unknown user {tok.user!r}")
        return self


def now_utc() -> datetime:
    return datetime.now(UTC)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    need = 128 * r * (n + p + 2)
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=need + 2**20, dklen=32
    )


def hash_password(password: str) -> PasswordHash:
    """A new scrypt hash of ``password`` with a random salt and the current parameters."""
    salt = os.urandom(16)
    return PasswordHash(salt=b64(salt), hash=b64(scrypt(password, salt, **SCRYPT)), **SCRYPT)


def verify_password(password: str, stored: PasswordHash) -> bool:
    """Whether ``password`` matches ``stored`` (constant-time comparison)."""
    computed = scrypt(password, base64.b64decode(stored.salt), stored.n, stored.r, stored.p)
    return hmac.compare_digest(computed, base64.b64decode(stored.hash))


# Checked when the user is unknown or has no password, so that answer takes as long as a
# wrong password (the outcome is a refusal either way).
DECOY = PasswordHash(salt=b64(bytes(16)), hash=b64(bytes(32)), **SCRYPT)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
