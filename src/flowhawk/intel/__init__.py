"""Threat intelligence: feeds in common formats combined into reputations, and fast lookups.

* :mod:`~flowhawk.intel.formats`: one parser per feed format (plain lists, CSV,
  maltrail trails, Zeek intel, STIX 2.1, MISP), detected from content;
* :mod:`~flowhawk.intel.feeds`: files, folders and URLs to feeds, with versions;
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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowhawk.intel.feeds import Feed, load_feeds
    from flowhawk.intel.intelset import FeedInfo, IntelSet, load
    from flowhawk.intel.reputation import HIGH_RISK
    from flowhawk.intel.settings import CsvMapping, FeedOptions, FeedSettings, IntelSettings

#: Where each public name lives. They are imported on first use, so that reading the
#: settings (as the configuration does for every command) does not compile lookups.
_HOMES = {
    "HIGH_RISK": "reputation",
    "CsvMapping": "settings",
    "Feed": "feeds",
    "FeedInfo": "intelset",
    "FeedOptions": "settings",
    "FeedSettings": "settings",
    "IntelSet": "intelset",
    "IntelSettings": "settings",
    "load": "intelset",
    "load_feeds": "feeds",
}
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


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
