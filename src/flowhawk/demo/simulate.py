"""A deterministic, vectorized simulator of a small network's flows.

Traffic is described as *streams*: a set of clients talking to a set of servers on
one service, at a rate per client per hour that follows a working-day profile, or
at a fixed period with jitter (heartbeats, beacons). Each stream becomes arrays of
flows with numpy in one go, so millions of flows take seconds. The same seed gives
the same flows, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.schema import RAW_FLOW_SCHEMA, conform

HOUR = 3600.0
#: Relative activity by hour of day for office traffic (peak 1.0).
OFFICE_DAY = np.array(
    [
        0.05,
        0.04,
        0.04,
        0.04,
        0.05,
        0.08,
        0.2,
        0.5,
        0.9,
        1.0,
        1.0,
        0.95,
        0.8,
        0.95,
        1.0,
        1.0,
        0.9,
        0.7,
        0.4,
        0.2,
        0.12,
        0.1,
        0.08,
        0.06,
    ]
)
ALWAYS = np.ones(24)


@dataclass
class Stream:
    """One kind of traffic between clients and servers."""

    name: str
    clients: list[str]
    servers: list[str]
    port: int
    proto: int  # 6 tcp, 17 udp, 1 icmp
    rate: float = 0.0  # flows per client per hour at peak (Poisson), or...
    period: float = 0.0  # ...a fixed period in seconds (heartbeats, beacons)
    jitter: float = 0.0  # period jitter, fraction of the period
    profile: np.ndarray = field(default_factory=lambda: OFFICE_DAY)
    zipf: float = 0.0  # >0: servers chosen with Zipf popularity (browsing)
    start: float = 0.0  # seconds from the scenario start
    stop: float | None = None
    req_bytes: tuple[float, float] = (6.0, 0.6)  # lognormal (mu, sigma) of client bytes
    resp_bytes: tuple[float, float] = (8.0, 1.0)
    duration: tuple[float, float] = (-1.0, 1.0)  # lognormal seconds
    service: str | None = None
    state: str = "SF"
    answered: float = 1.0  # fraction of flows the server answers


def _times(
    s: Stream, t0: float, t1: float, rng: np.random.Generator, n_clients: int
) -> tuple[np.ndarray, np.ndarray]:
    """(times, client index) of a stream's flows between t0 and t1 (seconds)."""
    if s.period > 0:
        base = np.arange(t0 + rng.uniform(0, s.period), t1, s.period)
        times = np.concatenate([base + rng.uniform(0, s.period, 1) for _ in range(n_clients)])
        who = np.repeat(np.arange(n_clients), len(base))
        times = times + rng.normal(0.0, s.jitter * s.period, len(times))
        keep = (times >= t0) & (times < t1)
        return times[keep], who[keep]
    hours = np.arange(np.floor(t0 / HOUR), np.ceil(t1 / HOUR))
    lam = s.rate * s.profile[(hours % 24).astype(int)]
    counts = rng.poisson(np.outer(np.ones(n_clients), lam))  # clients x hours
    total = int(counts.sum())
    who = np.repeat(np.repeat(np.arange(n_clients), len(hours)), counts.ravel())
    hour_of = np.repeat(np.tile(hours, n_clients), counts.ravel())
    times = (hour_of + rng.random(total)) * HOUR
    keep = (times >= t0) & (times < t1)
    return times[keep], who[keep]


def generate(streams: list[Stream], start: datetime, hours: float, seed: int) -> pa.Table:
    """Raw flows (``RAW_FLOW_SCHEMA``) of all streams over ``hours`` from ``start``."""
    rng = np.random.default_rng(seed)
    frames = []
    for s in streams:
        t0 = max(0.0, s.start)
        t1 = hours * HOUR if s.stop is None else min(hours * HOUR, s.stop)
        if t1 <= t0:
            continue
        times, who = _times(s, t0, t1, rng, len(s.clients))
        n = len(times)
        if n == 0:
            continue
        if s.zipf > 0:
            ranks = np.arange(1, len(s.servers) + 1, dtype=float) ** -s.zipf
            server = rng.choice(len(s.servers), n, p=ranks / ranks.sum())
        else:
            server = rng.integers(0, len(s.servers), n)
        req = np.maximum(40, rng.lognormal(*s.req_bytes, n)).astype(np.int64)
        answered = rng.random(n) < s.answered
        resp = np.where(answered, np.maximum(40, rng.lognormal(*s.resp_bytes, n)), 0).astype(
            np.int64
        )
        dur = np.where(answered, rng.lognormal(*s.duration, n), 0.0)
        mtu = 1200 if s.proto == 6 else 512
        frames.append(
            pl.DataFrame(
                {
                    "t": times,
                    "dur": dur,
                    "src_ip": np.array(s.clients)[who],
                    "dst_ip": np.array(s.servers)[server],
                    "src_port": rng.integers(49152, 65536, n) if s.proto != 1 else np.zeros(n, int),
                    "dst_port": np.full(n, s.port),
                    "proto": np.full(n, s.proto),
                    "src_bytes": req,
                    "dst_bytes": resp,
                    "src_pkts": req // mtu + (3 if s.proto == 6 else 1),
                    "dst_pkts": np.where(answered, resp // mtu + (2 if s.proto == 6 else 1), 0),
                    "service": [s.service] * n,
                    "state": np.where(answered, s.state, "S0"),
                }
            )
        )
    df = pl.concat(frames).sort("t")
    epoch_us = int(start.timestamp() * 1_000_000)
    start_us = (pl.col("t") * 1e6).cast(pl.Int64) + epoch_us
    df = df.with_columns(
        ts_start=start_us.cast(pl.Datetime("us", "UTC")),
        ts_end=(start_us + (pl.col("dur") * 1e6).cast(pl.Int64)).cast(pl.Datetime("us", "UTC")),
        orient=pl.lit("start"),
        uni=pl.lit(False),
        sampling=pl.lit(1),
        input=pl.lit("simulator"),
        flow_id=pl.int_range(pl.len()).cast(pl.String),
    ).drop("t", "dur")
    return conform(df.to_arrow(), RAW_FLOW_SCHEMA)
