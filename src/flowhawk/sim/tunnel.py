"""DNS tunnels through the site's resolver (see :mod:`.kinds`).

A tunnel's names are unique, so the resolver never answers from its cache: every
query the client sends is forwarded to an upstream resolver and answered as large.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from flowhawk.sim import site as S
from flowhawk.sim.anomalies import Injected, World, comm, flows, minutes, spread

#: Payload of a query whose name carries data (a name holds at most 253 bytes).
UPLOAD_QUERY = (120, 250)
#: Queries a minute of an uploading tunnel (tools poll 1-2.5 times a second).
UPLOAD_RATE = (60.0, 150.0)


def _forward(w: World, aid: int, dns: str, q: pl.DataFrame, resp: np.ndarray) -> str:
    """The resolver forwards each query in ``q`` upstream 2 ms later; returns upstream."""
    n, upstream = q.height, w.choice(S.RESOLVERS)
    t = q.get_column("ts_start").dt.epoch("us").to_numpy() + 2000
    req = (q.get_column("src_bytes") - 28 * q.get_column("src_pkts")).to_numpy()
    fwd = flows("dns_tunnel", t, np.full(n, 0.03), dns, [upstream] * n, 53, 17,
                req, resp, np.ones(n, bool), w.rng, service="dns")  # fmt: skip
    w.add(fwd, aid)
    return upstream


def dns_tunnel(w: World, aid: int, lo: datetime, hi: datetime) -> Injected | None:
    site, dns = w.site, w.site.role["dns"]
    start, end = w.window(lo, hi, (10, 40))
    busy = w.active(site.workstations, "ws-dns", start, end, 8)
    others = [h for h in site.servers if h != dns]
    if not busy and not others:
        return None
    client = w.choice(busy) if busy else w.choice(others)
    if w.wants("download", 0.5):
        return _download(w, aid, dns, client, start, end)
    return _upload(w, aid, dns, client, start, end)


def _download(
    w: World, aid: int, dns: str, client: str, start: datetime, end: datetime
) -> Injected | None:
    """The client's usual queries get 15-40x larger answers (TXT records carrying data)."""
    scale = float(w.rng.uniform(15, 40))
    asked: list[pl.DataFrame] = []

    def change(df: pl.DataFrame) -> pl.DataFrame:
        resp = np.minimum((df["dst_bytes"] - 28 * df["dst_pkts"]).to_numpy() * scale, 4000)
        resp = resp.astype(np.int64)
        pk = np.maximum(1, -(-resp // 1472))
        asked.append(df.with_columns(_resp=pl.Series(resp)))
        return df.with_columns(dst_pkts=pl.Series(pk), dst_bytes=pl.Series(resp + 28 * pk))

    if not w.modify(comm(client, dns, 53, 17), start, end, aid, change):
        return None
    upstream = _forward(w, aid, dns, asked[0], asked[0].get_column("_resp").to_numpy())
    return Injected(
        "dns_tunnel",
        "download",
        start,
        end,
        f"DNS server {dns} answers {client} with responses {scale:.0f}x larger than usual "
        f"(up to 4 KB, TXT-like) for {minutes(start, end)} min, forwarding each query to "
        f"{upstream} (a DNS tunnel through the site's resolver); query rate unchanged",
    )


def _upload(w: World, aid: int, dns: str, client: str, start: datetime, end: datetime) -> Injected:
    """The client sends 60-150 queries a minute whose names carry data, answered briefly."""
    rate = float(w.rng.uniform(*UPLOAD_RATE))
    n = max(10, int(rate * minutes(start, end)))
    req = w.rng.integers(UPLOAD_QUERY[0], UPLOAD_QUERY[1] + 1, n)
    resp = w.rng.integers(60, 160, n)
    queries = flows("dns_tunnel", spread(w, start, end, n), np.full(n, 0.05), client, dns,
                    53, 17, req, resp, np.ones(n, bool), w.rng, service="dns")  # fmt: skip
    w.add(queries, aid)
    upstream = _forward(w, aid, dns, queries, resp)
    return Injected(
        "dns_tunnel",
        "upload",
        start,
        end,
        f"{client} sends {rate:.0f} DNS queries a minute through {dns} for "
        f"{minutes(start, end)} min, names carrying {int(req.sum()) // 1024} KB of data, each "
        f"forwarded to {upstream} (a DNS tunnel uploading through the site's resolver)",
    )
