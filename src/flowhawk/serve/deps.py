"""Request dependencies: the service, the caller (authenticated), and role checks.

Every route except ``GET /api/v1/health`` and ``POST /api/v1/login`` depends on
:func:`principal`: a ``Authorization: Bearer <token>`` header with an API or session
token (``flowhawk tokens add``, ``POST /api/v1/login``). Roles: viewers read,
analysts also change events, admins everything. Site scopes are applied inside each
query (see :mod:`flowhawk.serve.eventdb`), never by filtering pages afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from flowhawk.serve.auth import Principal

if TYPE_CHECKING:
    from flowhawk.serve.service import Service

_bearer = HTTPBearer(auto_error=False, description="An API or session token (fh_...).")


def service(request: Request) -> Service:
    return request.app.state.service


def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "authentication required: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    who = service(request).auth.authenticate(creds.credentials)
    if who is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid, expired or revoked token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return who


def writer(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.can_write():
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {who.role} cannot change events")
    return who


def admin(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.is_admin():
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin role required")
    return who


Svc = Annotated[Any, Depends(service)]  # the Service (Any: no import cycle)
Who = Annotated[Principal, Depends(principal)]
Writer = Annotated[Principal, Depends(writer)]
Admin = Annotated[Principal, Depends(admin)]


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")
