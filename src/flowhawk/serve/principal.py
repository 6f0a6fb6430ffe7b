"""Who is asking: a role and the sites it may see, as checked on every API request.

Three roles, each a superset of the one before: ``viewer`` reads, ``analyst`` also
changes an event's status, verdict and comment, ``admin`` also manages users, tokens,
policies and outputs. A user's site list scopes what it sees; an empty list means every
site, and an admin always sees every site. A :class:`Principal` is the role and scope of
one authenticated token, built from its user's current record each time, so a changed
role or a disabled user takes effect on the next request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Role = Literal["viewer", "analyst", "admin"]
ROLES: tuple[str, ...] = get_args(Role)


@dataclass(frozen=True)
class Principal:
    """The authenticated user behind a token: role and visible sites (None = all)."""

    user: str
    role: Role
    sites: frozenset[str] | None
    token_id: str

    def can_write(self) -> bool:
        """Whether this principal may change events (analysts and admins)."""
        return self.role in ("analyst", "admin")

    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees(self, site: str | None) -> bool:
        """Whether an item of ``site`` is visible. Items without a site are visible only to
        all-sites principals: a site-scoped user sees nothing it was not given."""
        return self.sites is None or site in self.sites

    def scope(self, requested: list[str] | None) -> list[str] | None:
        """The sites a query may touch.

        None means no restriction (an all-sites principal that asked for nothing). An
        empty ``requested`` list counts as asking for nothing, as empty site lists do
        everywhere in flowhawk. Otherwise the requested sites this principal sees, in
        the order asked (requested sites outside the scope drop out, possibly leaving
        ``[]``: nothing visible), or, when nothing was requested, its own sites.
        """
        asked = list(dict.fromkeys(requested or ()))
        if self.sites is None:
            return asked or None
        if not asked:
            return sorted(self.sites)
        return [s for s in asked if s in self.sites]
