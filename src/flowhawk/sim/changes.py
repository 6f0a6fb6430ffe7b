"""Anomalies of behavior: new communications, shifts, port shifts, ICMP bursts (see
:mod:`.kinds`)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from flowhawk.sim import site as S
from flowhawk.sim.anomalies import (
    Injected,
    World,
    comm,
    flows,
    minutes,
    rejected,
    scale,
    spread,
)

# -- new communications and changed behavior --------------------------------------------


def new_communication(w: World, aid: int, lo: datetime, hi: datetime) -> Injected | None:
    start, end = w.window(lo, hi, (5, 30))
    role, site = w.site.role, w.site
    busy = w.active(site.workstations, "ws-web", start, end, 5)
    options = []
    if busy:
        targets = [
            (role["db"], 5432),
            (role["backup"], 22),
            (role["files"], 22),
            (site.historian, 1433),
            (site.scada, 4840),
            (role["mqtt"], 1883),
        ]
        options += [("internal_service", w.choice(busy), t, p) for t, p in targets]
    options += [
        ("lateral", role[r], w.choice(site.workstations), p)
        for r in ("app", "web", "mail")
        for p in (445, 5985)
    ]
    devices = [*site.iot["mqtt"], *site.iot["meter"], *site.plcs, site.historian]
    options += [("external", d, None, p) for d in devices for p in (443, 8443, 4444)]
    order = sorted(w.rng.permutation(len(options)), key=lambda i: options[i][0] != w.prefer)
    for i in order:
        variant, src, dst, port = options[int(i)]
        if variant == "external":
            dst = w.new_external()[0]
        if src == dst or w.seen_comm(src, dst, port, 6, end):
            continue
        n = int(w.rng.integers(3, 16))
        req = w.rng.lognormal(6.5, 0.8, n).astype(np.int64) + 1
        resp = w.rng.lognormal(8.0, 1.0, n).astype(np.int64) + 1
        new = flows(
            "new_communication",
            spread(w, start, end, n),
            w.rng.lognormal(0, 0.8, n),
            src,
            dst,
            port,
            6,
            req,
            resp,
            True,
            w.rng,
        )
        w.add(new, aid)
        return Injected(
            "new_communication",
            variant,
            start,
            end,
            f"{src} talks to {dst}:{port}/tcp for the first time ({n} connections in "
            f"{minutes(start, end)} min)",
        )
    return None


def _empty_hosts(w: World, n: int) -> list[str]:
    """Internal addresses no device uses, next to the workstations and the plant."""
    used = set(w.site.internal_hosts)
    pool = [f"10.1.{16 + b}.{h}" for b in range(2) for h in range(1, 255)]
    pool += [f"10.2.1.{h}" for h in range(1, 255)]
    free = [a for a in pool if a not in used]
    return [free[int(i)] for i in sorted(w.rng.choice(len(free), min(n, len(free)), replace=False))]


def behavior_shift(w: World, aid: int, lo: datetime, hi: datetime) -> Injected | None:
    site = w.site
    variants = ["fanout"] + (["iot_fanout"] if site.iot["cloud"] else [])
    variant = w.prefer if w.prefer in variants else w.choice(variants)
    start, end = w.window(lo, hi, (2, 6))  # scans are quick
    busy = w.active(site.workstations, "ws-dns", start, end, 8)
    if variant == "iot_fanout":
        dev = w.choice(site.iot["cloud"])
        targets = w.new_external(int(w.rng.integers(40, 101)))
        port = int(w.choice([23, 2323]))
        n = len(targets)
        answered = w.rng.random(n) < 0.1
        new = flows(
            "behavior_shift",
            spread(w, start, end, n),
            np.full(n, 3.0),
            dev,
            targets,
            port,
            6,
            np.full(n, 1),
            np.full(n, 1),
            False,
            w.rng,
            syn_tries=2,
        )
        new = rejected(new, answered)
        w.add(new, aid)
        return Injected(
            "behavior_shift",
            "iot_fanout",
            start,
            end,
            f"IoT device {dev} probes {n} external addresses on {port}/tcp in "
            f"{minutes(start, end)} min (telnet scanning, as a botnet does)",
        )
    src = w.choice(busy) if busy else site.role["app"]
    port = int(w.choice([445, 22, 3389, 5985]))
    live = [h for h in site.workstations + site.servers if h != src]
    live = [live[int(i)] for i in w.rng.choice(len(live), min(len(live), 30), replace=False)]
    targets = sorted(live + _empty_hosts(w, int(w.rng.integers(10, 51))))
    targets = [targets[int(i)] for i in w.rng.permutation(len(targets))]
    n = len(targets)
    serves = np.array([t in site.servers and port in (445, 22) for t in targets])
    exists = np.isin(np.array(targets, dtype=object), np.array(live, dtype=object))
    new = flows(
        "behavior_shift",
        spread(w, start, end, n),
        np.where(serves, 0.5, 1.0),
        src,
        targets,
        port,
        6,
        np.full(n, 200),
        np.full(n, 300),
        serves,
        w.rng,
        syn_tries=1,
    )
    new = rejected(new, exists & ~serves)
    w.add(new, aid)
    return Injected(
        "behavior_shift",
        "fanout",
        start,
        end,
        f"{src} connects to {n} internal addresses on {port}/tcp in {minutes(start, end)} min "
        f"(a scan: {int(exists.sum())} hosts exist, {int(serves.sum())} accept)",
    )


def port_shift(w: World, aid: int, lo: datetime, hi: datetime) -> Injected | None:
    start, end = w.window(lo, hi, (10, 60))
    site = w.site
    others = [h for h in site.workstations if h not in site.admins]
    if others and w.wants("rdp_spraying", 0.4):
        variant, src, dst, port, svc = (
            "rdp_spraying",
            w.choice(others),
            site.role["dc"],
            3389,
            "rdp",
        )
    else:
        variant, src, dst, port, svc = (
            "ssh_bruteforce",
            w.new_external()[0],
            site.role["web"],
            22,
            "ssh",
        )
    per_minute = float(w.rng.uniform(10, 30))
    n = max(10, int(per_minute * minutes(start, end)))
    req = w.rng.lognormal(7.3, 0.2, n).astype(np.int64)
    resp = w.rng.lognormal(7.8, 0.2, n).astype(np.int64)
    new = flows(
        "port_shift",
        spread(w, start, end, n),
        w.rng.lognormal(0.5, 0.3, n),
        src,
        dst,
        port,
        6,
        req,
        resp,
        True,
        w.rng,
        service=svc,
    )
    w.add(new, aid)
    return Injected(
        "port_shift",
        variant,
        start,
        end,
        f"{dst}:{port}/tcp gets {per_minute:.0f} connections a minute from {src} (failed "
        f"logins, {variant.replace('_', ' ')}) for {minutes(start, end)} min",
    )


def icmp_burst(w: World, aid: int, lo: datetime, hi: datetime) -> Injected | None:
    start, end = w.window(lo, hi, (5, 20))
    site = w.site
    pings = w.periodic(60, {2048})
    if pings and w.wants("flood", 0.5):
        uplink = [p for p in pings if p[1] == S.INTERNET_CHECK]  # the internet, if watched
        mon, target, port, proto, _ = w.choice(uplink or pings)
        factor = float(np.exp(w.rng.uniform(np.log(30), np.log(100))))

        def change(df: pl.DataFrame) -> pl.DataFrame:
            f = factor * w.rng.lognormal(0.0, 0.1, df.height)
            return df.with_columns(*scale(["src_pkts", "src_bytes", "dst_pkts", "dst_bytes"], f))

        if not w.modify(comm(mon, target, port, proto), start, end, aid, change):
            return None
        scope = "the internet" if target == S.INTERNET_CHECK else "an internal host"
        return Injected(
            "icmp_burst",
            "flood",
            start,
            end,
            f"{mon} floods {target} ({scope}) with echo requests: about {factor:.0f}x the "
            f"packets of its usual ping, for {minutes(start, end)} min",
        )
    mon = site.role["monitor"]
    sources = [s for s in site.servers if s != mon]
    if not sources:
        return None
    src = w.choice(sources)
    live = [h for h in site.internal_hosts if h != src]
    live = [live[int(i)] for i in w.rng.choice(len(live), min(len(live), 80), replace=False)]
    targets = sorted(live + _empty_hosts(w, int(w.rng.integers(40, 121))))
    n = len(targets)
    exists = np.isin(np.array(targets, dtype=object), np.array(live, dtype=object))
    new = flows(
        "icmp_burst",
        spread(w, start, end, n),
        np.where(exists, 0.001, 0.0),
        src,
        targets,
        2048,
        1,
        np.full(n, 56),
        np.full(n, 56),
        exists,
        w.rng,
    )
    w.add(new, aid)
    return Injected(
        "icmp_burst",
        "sweep",
        start,
        end,
        f"{src} pings {n} internal addresses in {minutes(start, end)} min (a sweep; "
        f"{int(exists.sum())} answer)",
    )
