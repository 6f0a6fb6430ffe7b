"""Authentication and authorization of ``flowhawk serve``: who a request acts as and what
it may see and change.

The pieces live in two modules and are used from here:

- :mod:`flowhawk.serve.principal`: roles (``viewer`` < ``analyst`` < ``admin``) and the
  :class:`Principal` a request acts as, with its site scope;
- :mod:`flowhawk.serve.auth_store`: :class:`AuthStore`, the users, tokens and sessions
  in ``DATA/auth.json`` (scrypt password hashes, SHA-256 token hashes, atomic writes,
  re-read when another process changed the file).

Every refusal that is the caller's mistake (unknown user, bad role, short password)
raises :class:`AuthError`; a damaged ``auth.json`` raises
:class:`flowhawk.errors.StateError` naming the file.
"""

from __future__ import annotations

from flowhawk.errors import AuthError
from flowhawk.serve.auth_store import (
    AUTH_FILE,
    INITIAL_ADMIN,
    INITIAL_TOKEN_LABEL,
    KINDS,
    MIN_PASSWORD,
    AuthStore,
)
from flowhawk.serve.principal import ROLES, Principal, Role

__all__ = [
    "AUTH_FILE",
    "INITIAL_ADMIN",
    "INITIAL_TOKEN_LABEL",
    "KINDS",
    "MIN_PASSWORD",
    "ROLES",
    "AuthError",
    "AuthStore",
    "Principal",
    "Role",
]
