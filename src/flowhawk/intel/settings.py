"""Settings of threat-intelligence loading: feeds, their weights and categories, decay.

Declared like every other setting (:mod:`flowhawk.config`): strict models, durations
as seconds or text (``"30d"``). A feed's options are resolved from three layers, each
overriding only what it sets: the defaults here, then every entry of
``IntelSettings.options`` whose pattern (a feed name or an ``fnmatch`` pattern such
as ``"malware/*"``) matches the feed's name, in order, then the feed's own entry in
``IntelSettings.feeds`` (or the :class:`FeedSettings` passed to ``load``).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import Field, field_validator

from flowhawk.intel import allow
from flowhawk.intel.schema import CATEGORIES
from flowhawk.settingtypes import Duration, Strict

FormatName = Literal["plain", "csv", "maltrail", "zeek", "stix", "misp"]
Category = Literal[CATEGORIES]  # type: ignore[valid-type]

DAY = 86400.0


class CsvMapping(Strict):
    """Which CSV columns hold what; unset ones are found from common header names."""

    value: str | None = Field(None, description="Column of the indicator value.")
    type: str | None = Field(None, description="Column of the indicator type (optional).")
    category: str | None = Field(None, description="Column of the threat type (optional).")
    family: str | None = Field(None, description="Column of the malware family (optional).")
    first_seen: str | None = Field(None, description="Column of the first-seen time.")
    last_seen: str | None = Field(None, description="Column of the last-seen time.")
    confidence: str | None = Field(None, description="Column of a 0-100 confidence.")
    delimiter: str | None = Field(None, description="Field separator (default: guessed).")


class FeedOptions(Strict):
    """How one feed is read and how much it counts."""

    format: FormatName | None = Field(None, description="Format; detected from content if unset.")
    weight: float = Field(1.0, ge=0, le=10, description="Trust in the feed (1 = normal).")
    category: Category | None = Field(
        None, description="Category of entries that carry none (default: guessed from the name)."
    )
    max_age: Duration | None = Field(
        None, description="Evidence older than this is dropped (default: kept, decaying)."
    )
    half_life: Duration | None = Field(
        None, description="Age at which evidence counts half (default: [intel] half_life)."
    )
    csv: CsvMapping = Field(default_factory=CsvMapping)


class FeedSettings(FeedOptions):
    """One configured feed: a file, a folder or an http(s) URL."""

    source: str = Field(description="Path (file or folder) or http(s) URL.")
    name: str | None = Field(None, description="Feed name (default: the file stem).")


class IntelSettings(Strict):
    """The ``[intel]`` settings."""

    feeds: list[FeedSettings] = Field(default_factory=list)
    options: dict[str, FeedOptions] = Field(
        default_factory=dict, description="Options by feed name or fnmatch pattern."
    )
    half_life: Duration = Field(30 * DAY, gt=0, description="Default evidence half-life.")
    max_age: Duration | None = Field(None, description="Default maximum evidence age.")
    fetch_timeout: Duration = Field(60.0, gt=0, description="Timeout of one feed download.")
    refresh: Duration | None = Field(
        3600.0,
        gt=0,
        description="How often `flowhawk serve` reloads the feeds (files and URLs) and "
        "detects with the new version; none: only at start.",
    )
    max_download_bytes: int = Field(512 * 1024 * 1024, gt=0, description="Largest download.")
    allow: list[str] = Field(
        default_factory=list,
        description=(
            "Addresses, networks and domains (with their subdomains) no feed may list: "
            "public resolvers, your own ranges, partners."
        ),
    )

    @field_validator("allow")
    @classmethod
    def _allow(cls, values: list[str]) -> list[str]:
        return [allow.check(v) for v in values]

    def options_for(self, name: str, own: FeedOptions | None = None) -> FeedOptions:
        """The resolved options of the feed called ``name``."""
        values: dict[str, object] = {}
        layers = [o for pattern, o in self.options.items() if fnmatchcase(name, pattern)]
        for layer in [*layers, *([own] if own is not None else [])]:
            for key in layer.model_fields_set & set(FeedOptions.model_fields):
                values[key] = getattr(layer, key)
        resolved = FeedOptions(**values)  # type: ignore[arg-type]
        if resolved.half_life is None:
            resolved.half_life = self.half_life
        if resolved.max_age is None and "max_age" not in values:
            resolved.max_age = self.max_age
        return resolved
