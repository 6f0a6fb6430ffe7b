"""Host risk: every alarm adds to the hosts it concerns, and fades with event time.

An alarm about one host (``entity``, e.g. a new device) adds to that host; any
other alarm adds to both ends of its communication. A contribution halves every
``events.host_half_life`` of event time before the newest event.

Evidence of one kind has diminishing returns, as in event risk
(:func:`flowhawk.events.family_risk`): per host and method family (a method alone,
or related methods such as the clustering models M10-M25), the faded contributions
are taken strongest first and the k-th counts ``0.5**k`` as much, so a thousand weak
alarms of one kind cannot outweigh a few strong, different ones. Families then
combine like independent probabilities: ``risk = 100 * (1 - prod_families(1 - f))``.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from flowhawk import netaddr
from flowhawk.events import family_risk
from flowhawk.netaddr import NetworkSet

HOST_COLUMNS = [
    "ip",
    "risk",
    "events",
    "alarms",
    "methods",
    "max_event_risk",
    "internal",
    "sites",
    "first_event",
    "last_event",
]


def rank_hosts(
    alarms: pl.DataFrame, events: pl.DataFrame, half_life: float, internal: NetworkSet
) -> pl.DataFrame:
    """Hosts ranked by accumulated, decaying risk.

    ``alarms`` needs event_id, ts, method, entity, src_ip, dst_ip, contribution;
    ``events`` needs id, risk, site.
    """
    if alarms.height == 0:
        return pl.DataFrame(schema={c: pl.String for c in HOST_COLUMNS})
    now = alarms.get_column("ts").max()
    by_entity = alarms.filter(pl.col("entity").is_not_null()).with_columns(ip=pl.col("entity"))
    shared = alarms.filter(pl.col("entity").is_null())
    rows = pl.concat(
        [
            by_entity,
            shared.with_columns(ip=pl.col("src_ip")),
            shared.with_columns(ip=pl.col("dst_ip")),
        ],
        how="vertical",
    ).filter(pl.col("ip") != "*")  # a view's "any host" side is not a host
    age = (pl.lit(now) - pl.col("ts")).dt.total_seconds().cast(pl.Float64)
    rows = rows.with_columns(faded=pl.col("contribution") * (0.5 ** (age / max(half_life, 1.0))))
    rows = rows.join(
        events.select(pl.col("id").alias("event_id"), pl.col("risk").alias("event_risk"), "site"),
        on="event_id",
        how="left",
    )
    risk = family_risk(rows, "faded", "ip")
    hosts = (
        rows.group_by("ip")
        .agg(
            events=pl.col("event_id").n_unique(),
            alarms=pl.len(),
            methods=pl.col("method").unique().sort().str.join(";"),
            max_event_risk=pl.col("event_risk").max(),
            sites=pl.col("site").unique().sort().str.join(";"),
            first_event=pl.col("ts").min(),
            last_event=pl.col("ts").max(),
        )
        .join(risk, on="ip")
    )
    hi, lo, _ = netaddr.parse(hosts.get_column("ip"))
    hosts = hosts.with_columns(
        internal=pl.Series(internal.contains(hi, lo) if len(hi) else np.zeros(0, bool))
    )
    return hosts.sort(["risk", "events", "ip"], descending=[True, True, False]).select(HOST_COLUMNS)
