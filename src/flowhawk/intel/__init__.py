"""Threat intelligence: feeds in common formats combined into reputations, and fast lookups.

* :mod:`~flowhawk.intel.formats`: one parser per feed format (plain lists, CSV,
  maltrail trails, Zeek intel, STIX 2.1, MISP), detected from content;
* :mod:`~flowhawk.intel.load`: files, folders and URLs to feeds, with versions;
* :mod:`~flowhawk.intel.reputation`: the score 0-100 (lower is riskier) and its formula;
* :mod:`~flowhawk.intel.intelset`: the loaded set, its evidence and the columnar
  lookups of addresses (:mod:`~flowhawk.intel.iptable`), domains
  (:mod:`~flowhawk.intel.domaintable`) and URLs.

Typical use::

    intel = load(["/etc/flowhawk/feeds", "https://example.org/c2.txt"], settings)
    intel = load(settings.feeds, settings)              # or the configured feeds
    hits = intel.lookup_ips(flows.get_column("dst_ip"))   # reputation, indicator
    intel.explain(hits.get_column("indicator").drop_nulls().unique().to_list())
    intel.version, intel.feed_versions()                  # what the hits came from
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from flowhawk.diagnostics import Diagnostics
from flowhawk.intel.intelset import FeedInfo, IntelSet
from flowhawk.intel.load import Feed, load_feeds
from flowhawk.intel.reputation import HIGH_RISK
from flowhawk.intel.settings import CsvMapping, FeedOptions, FeedSettings, IntelSettings

__all__ = [
    "HIGH_RISK",
    "CsvMapping",
    "Feed",
    "FeedInfo",
    "FeedOptions",
    "FeedSettings",
    "IntelSet",
    "IntelSettings",
    "load",
    "load_feeds",
]


def load(
    sources: Iterable[str | Path | FeedSettings],
    settings: IntelSettings | None = None,
    *,
    diagnostics: Diagnostics | None = None,
    now: datetime | None = None,
    as_of: datetime | None = None,
) -> IntelSet:
    """Load feeds (files, folders, http(s) URLs) and build the scored, indexed set.

    ``now`` fixes the load time of every feed (default: the clock); ``as_of`` the time
    reputations are computed at (default: the latest load time).
    """
    diagnostics = diagnostics or Diagnostics()
    feeds = load_feeds(sources, settings, diagnostics=diagnostics, now=now)
    return IntelSet.build(feeds, as_of=as_of, diagnostics=diagnostics)
