"""N7: long connections, also when an exporter reported them as several records.

A connection open for hours is worth a look (a remote-access session, a tunnel, a
persistent command channel), whatever it carries: like RITA, N7 reports duration
itself. Flow exporters cut long connections into records at their active timeout (30
minutes for Cisco and for flowhawk's own meter), so records of the same 5-tuple (site,
client, client port, server, server port, protocol) are joined into one connection when
the next starts within ``join_gap`` of the end of the ones before; that gap stays under
the usual idle timeouts (15-60 s), so separate periodic sessions are not joined. The
open chains are carried from batch to batch in the state and dropped once event time has
passed their end by more than the gap (flows arrive in start order, so nothing can
extend them any more).

Much of what holds connections open for hours is ordinary: push and notification
channels, sync clients, mail IDLE, MQTT, video calls, mostly TLS to cloud services. As
RITA and commercial NDRs do, N7 asks how unusual the duration is *for that destination*
(the connection's external side, or its server inside the network; an external IPv4
address stands for its /24, where cloud services rotate addresses) and alarms from a
``bar``:

* ``min_duration`` (one hour) by default: a long session to a rare destination;
* ``growth`` times more (4 h, RITA's "low" level) on the ``session_services`` that
  hold long sessions by design (web and push over 443, 5228, 5223, mail IDLE,
  MQTT, real-time media; chosen while looking at CTU-Normal 010, see eval/README.md);
* ``growth`` times more for a *popular* destination, one more than ``popular_clients``
  internal hosts talked to (:class:`~flowhawk.detectors.popularity.Popularity`, as N8
  counts, from every flow in learning and scoring, as it stood at the start of the
  hour, so batches do not change it);
* at least ``growth`` times the longest connection the destination held during the
  learning period (``learn_normal``): what it normally does is not news.

A connection alarms when it reaches its bar, and again each time it grows ``growth``
times longer (level k: ``bar * growth**k``), on the record that crossed; parallel or
reopened connections of a communication that alarmed within ``repeat_after`` (a day)
alarm only at a higher level. Score: ``0.4 + 0.6 * min(1, log24(duration / bar))`` (at
the bar 0.4, a day past it 1.0), times ``east_west_factor`` inside the network
(database pools and file sessions are long by nature; connections leaving or entering it
matter more). The reason says why the bar is where it is. ``ignore_ports`` lists server
ports never to report. Destinations in the local scope (multicast, broadcast) are left
out. The entity is the internal side (the client if both are).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field, field_validator

from flowhawk import netaddr
from flowhawk.config import Duration
from flowhawk.detectors.base import (
    UTC_US,
    Batch,
    Detector,
    DetectorContext,
    DetectorSettings,
    conform_alarms,
    empty_alarms,
    restore_frame,
)
from flowhawk.detectors.popularity import Popularity, address_hash
from flowhawk.detectors.text import endpoint
from flowhawk.detectors.volbaseline import host_hash
from flowhawk.schema import EAST_WEST

TUPLE = ("site", "src_ip", "src_port", "dst_ip", "dst_port", "proto")
COMM = ("site", "src_ip", "dst_ip", "dst_port", "proto")
_TYPES: dict[str, pl.DataType] = {
    "site": pl.String(),
    "src_ip": pl.String(),
    "src_port": pl.Int32(),
    "dst_ip": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
}
_CHAIN: dict[str, pl.DataType] = _TYPES | {
    "start": pl.Int64(),
    "end": pl.Int64(),
    "records": pl.Int64(),
    "src_bytes": pl.Int64(),
    "dst_bytes": pl.Int64(),
    "packets": pl.Int64(),
    "level": pl.Int32(),
}
_ALARMED: dict[str, pl.DataType] = {c: _TYPES[c] for c in COMM} | {
    "level": pl.Int32(),
    "t": pl.Int64(),
}
#: Destinations with long connections while learning: the longest (µs).
_NORMS: dict[str, pl.DataType] = {
    "dest": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
    "longest": pl.Int64(),
}
#: (peer, internal host) pairs of the hours not yet counted in the popularity.
_PENDING: dict[str, pl.DataType] = {"dst": pl.UInt64(), "cli": pl.UInt64(), "hour": pl.Int64()}
_HOUR = 3_600_000_000
_PROTOS = {"tcp": 6, "udp": 17, "sctp": 132}

#: Services that hold long sessions by design: web and push over TLS (443, 8443, QUIC),
#: Google's and Apple's push channels, MQTT over TLS, mail IDLE (IMAPS), XMPP, real-time
#: media relays (STUN/TURN, Zoom, Jitsi, Google Meet).
DEFAULT_SESSION_SERVICES: list[str] = [
    "80/tcp",
    "443/tcp",
    "443/udp",
    "8443/tcp",
    "5228/tcp",
    "5223/tcp",
    "8883/tcp",
    "993/tcp",
    "5222/tcp",
    "3478/udp",
    "3479/udp",
    "3480/udp",
    "3481/udp",
    "8801/udp",
    "10000/udp",
    "19302/udp",
]


def parse_service(spec: str) -> tuple[int, int]:
    """``"443/tcp"`` as (port, protocol number); ValueError naming the spec otherwise."""
    port, _, proto = spec.strip().lower().partition("/")
    if not port.isdigit() or not proto or not 0 <= int(port) <= 65535:
        raise ValueError(f"{spec!r}: expected PORT/PROTOCOL such as '443/tcp'")
    if proto.isdigit():
        return int(port), int(proto)
    if proto not in _PROTOS:
        raise ValueError(f"{spec!r}: protocol must be tcp, udp, sctp or a number")
    return int(port), _PROTOS[proto]


class LongConnSettings(DetectorSettings):
    weight: float = Field(default=30.0, ge=0, le=100)
    min_duration: Duration = Field(
        default=3600.0, description="Connections open at least this long alarm (the base bar)."
    )
    join_gap: Duration = Field(
        default=30.0,
        description=(
            "Records of one 5-tuple are one connection when the next starts within this of "
            "the previous end (exporters' active timeouts); keep it under the idle timeout."
        ),
    )
    growth: float = Field(
        default=4.0,
        gt=1,
        description="An alarmed connection alarms again this many times longer; also the "
        "factor a session service or a popular destination raises the bar by.",
    )
    repeat_after: Duration = Field(
        default=86400.0,
        description=(
            "A communication that alarmed stays quiet this long for connections that are "
            "not longer (parallel or reopened sessions)."
        ),
    )
    east_west_factor: float = Field(
        default=0.6, ge=0, le=1, description="Score factor for connections inside the network."
    )
    ignore_ports: list[int] = Field(
        default_factory=list, description="Server ports whose long connections are not reported."
    )
    learn_normal: bool = Field(
        default=True,
        description=(
            "Destinations with long connections during the learning period alarm only from "
            "growth times the longest they held."
        ),
    )
    session_services: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SESSION_SERVICES),
        description="Server PORT/PROTOCOL (e.g. '443/tcp') that hold long sessions by "
        "design: their connections alarm from growth times min_duration.",
    )
    popular_clients: int = Field(
        default=10,
        ge=1,
        description="A destination more internal hosts than this talked to is popular: "
        "its connections alarm from growth times later.",
    )

    @field_validator("session_services")
    @classmethod
    def _services(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_service(spec)
        return value


class LongConnection(Detector):
    """N7: connections open longer than usual for their destination."""

    method = "N7"
    title = "long connection"
    Settings = LongConnSettings

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        assert isinstance(settings, LongConnSettings)
        self.s = settings
        self.chains = pl.DataFrame(schema=_CHAIN)
        self.norms = pl.DataFrame(schema=_NORMS)
        self.alarmed = pl.DataFrame(schema=_ALARMED)
        self.popularity = Popularity(settings.popular_clients)
        self.pending = pl.DataFrame(schema=_PENDING)
        ports = [parse_service(spec) for spec in settings.session_services]
        self.services = pl.DataFrame(
            {"dst_port": [p for p, _ in ports], "proto": [q for _, q in ports]},
            schema={"dst_port": pl.Int32(), "proto": pl.Int16()},
        ).unique()

    def learn(self, batch: Batch) -> None:
        self._step(batch.flows, scoring=False)

    def score(self, batch: Batch) -> pl.DataFrame:
        return self._step(batch.flows, scoring=True)

    def _records(self, flows: pl.DataFrame) -> pl.DataFrame:
        df = flows.with_row_index("_i").with_columns(
            pl.col("_i").cast(pl.Int64),
            pl.col("site").fill_null(""),
            pl.col("src_port").fill_null(0).cast(pl.Int32),
            pl.col("dst_port").fill_null(0).cast(pl.Int32),
            pl.col("proto").cast(pl.Int16),
            t=pl.col("ts_start").dt.epoch("us"),
        )
        df = df.filter(
            pl.col("src_ip").is_not_null()
            & pl.col("dst_ip").is_not_null()
            & pl.col("proto").is_not_null()
            & pl.col("t").is_not_null()
        )
        if self.s.ignore_ports:
            df = df.filter(~pl.col("dst_port").is_in(self.s.ignore_ports))
        scope = self.context.local_scope
        if df.height and len(scope):
            dsts = df.get_column("dst_ip").unique()
            hi, lo, ok = netaddr.parse(dsts)
            scoped = dsts.filter(pl.Series(ok & scope.contains(hi, lo)))
            df = df.filter(~pl.col("dst_ip").is_in(scoped.implode()))
        end = pl.coalesce(pl.col("ts_end").dt.epoch("us"), pl.col("t"))
        src_in = pl.col("src_internal").fill_null(False)
        dst_in = pl.col("dst_internal").fill_null(False)
        return df.select(
            *TUPLE,
            "_i",
            "t",
            pl.max_horizontal(end, pl.col("t")).alias("end"),
            pl.col("src_bytes").fill_null(0).alias("src_bytes"),
            pl.col("dst_bytes").fill_null(0).alias("dst_bytes"),
            (pl.col("src_pkts").fill_null(0) + pl.col("dst_pkts").fill_null(0)).alias("packets"),
            pl.col("direction").fill_null(""),
            src_in.alias("src_internal"),
            dst_in.alias("dst_internal"),
            # the destination: the external side, or the server inside the network
            peer=pl.when(~src_in & dst_in).then("src_ip").otherwise("dst_ip"),
            # the internal host talking to it (none when neither side is internal)
            host=pl.when(src_in).then("src_ip").when(dst_in).then("dst_ip"),
        )

    def _step(self, flows: pl.DataFrame, scoring: bool) -> pl.DataFrame:
        if flows.height == 0:
            return empty_alarms()
        newest = flows.get_column("ts_start").drop_nulls().dt.epoch("us").max()
        rec = self._records(flows)
        if rec.height == 0:
            self._prune(newest)
            return empty_alarms()
        self._remember_pairs(rec)
        gap = int(self.s.join_gap * 1_000_000)
        carried = self.chains.select(
            *TUPLE,
            _i=pl.lit(-1, pl.Int64),
            t="start",
            end="end",
            src_bytes="src_bytes",
            dst_bytes="dst_bytes",
            packets="packets",
            records="records",
            level="level",
        )
        rows = pl.concat(
            [
                carried,
                rec.select(
                    *carried.columns[:-2], records=pl.lit(1, pl.Int64), level=pl.lit(-1, pl.Int32)
                ),
            ],
            how="vertical_relaxed",
        )
        tup = list(TUPLE)
        prev_end = pl.col("end").cum_max().shift(1).over(tup)
        rows = rows.with_columns(
            _break=(prev_end.is_null() | ((pl.col("t") - prev_end) > gap)).cast(pl.Int32)
        ).with_columns(_chain=pl.col("_break").cum_sum().over(tup))
        chain = [*tup, "_chain"]
        rows = rows.with_columns(
            _start=pl.col("t").first().over(chain),
            _end=pl.col("end").cum_max().over(chain),
            _records=pl.col("records").cum_sum().over(chain),
            _sb=pl.col("src_bytes").cum_sum().over(chain),
            _db=pl.col("dst_bytes").cum_sum().over(chain),
            _pk=pl.col("packets").cum_sum().over(chain),
            _level0=pl.col("level").first().over(chain),
        )
        t_min = int(self.s.min_duration * 1_000_000)
        long = rows.filter((pl.col("_i") >= 0) & (pl.col("_end") - pl.col("_start") >= t_min))
        long = long.join(
            rec.select("_i", "direction", "src_internal", "dst_internal", "peer", "host"),
            on="_i",
        ).with_columns(dest=_dest(pl.col("peer"), pl.col("src_internal") & pl.col("dst_internal")))
        alarms = empty_alarms()
        if not scoring:
            if self.s.learn_normal:
                self._learn_norms(long)
            levels = long.clear().select(*chain, k=pl.lit(0, pl.Int32))
        else:
            long = self._levels(long)
            levels = long.select(*chain, "k")
            crossing = long.filter(
                (pl.col("k") >= 0)
                & (pl.col("k") > pl.col("_level0"))
                & (pl.col("_i") == pl.col("_i").min().over([*chain, "k"]))
            )
            crossing = self._once_per_communication(crossing)
            if crossing.height:
                alarms = self._describe(crossing)
        last = (
            rows.join(
                levels.group_by(chain).agg(pl.col("k").max()),
                on=chain,
                how="left",
                maintain_order="left",
            )
            .group_by(chain)
            .agg(
                start=pl.col("_start").last(),
                end=pl.col("_end").last(),
                records=pl.col("_records").last(),
                src_bytes=pl.col("_sb").last(),
                dst_bytes=pl.col("_db").last(),
                packets=pl.col("_pk").last(),
                level=pl.max_horizontal(pl.col("_level0").first(), pl.col("k").max().fill_null(-1)),
            )
        )
        self.chains = (
            last.select(list(_CHAIN)).cast(_CHAIN).sort([*TUPLE, "start"])  # type: ignore[arg-type]
        )
        self._fold(None)
        self._prune(newest)
        return alarms

    # -- what is normal for a destination -------------------------------------------------

    def _learn_norms(self, long: pl.DataFrame) -> None:
        """Remember the longest connection of each destination seen while learning."""
        if long.height == 0:
            return
        seen = long.group_by("dest", "dst_port", "proto").agg(
            longest=(pl.col("_end") - pl.col("_start")).max()
        )
        self.norms = (
            pl.concat([self.norms, seen.select(list(_NORMS)).cast(_NORMS)])  # type: ignore[arg-type]
            .group_by("dest", "dst_port", "proto")
            .agg(pl.col("longest").max())
            .sort("dest", "dst_port", "proto")
        )

    def _remember_pairs(self, rec: pl.DataFrame) -> None:
        """The batch's (peer, internal host) pairs, counted in the popularity once their
        hour is over (:meth:`_fold`)."""
        talk = rec.filter(pl.col("host").is_not_null() & (pl.col("host") != pl.col("peer")))
        if talk.height == 0:
            return
        pairs = pl.DataFrame(
            {
                "dst": address_hash(talk.get_column("peer")),
                "cli": host_hash(talk, host="host"),
                "hour": talk.get_column("t") // _HOUR,
            },
            schema=_PENDING,
        )
        self.pending = pl.concat([self.pending, pairs]).unique(maintain_order=True)

    def _fold(self, hour: int | None) -> None:
        """Count the pending pairs of hours before ``hour`` (None: before the newest)."""
        if self.pending.height == 0:
            return
        if hour is None:
            hour = int(self.pending.get_column("hour").max())  # type: ignore[arg-type]
        done = self.pending.filter(pl.col("hour") < hour)
        if done.height:
            self.popularity.update(
                done.get_column("dst").to_numpy(), done.get_column("cli").to_numpy()
            )
            self.pending = self.pending.filter(pl.col("hour") >= hour)

    def _levels(self, long: pl.DataFrame) -> pl.DataFrame:
        """Each long row's bar (µs), why it is there, and its level ``k`` (-1 under it)."""
        s = self.s
        if long.height == 0:
            return long.with_columns(
                bar=pl.lit(0.0),
                clients=pl.lit(0, pl.Int64),
                own=pl.lit(False),
                service=pl.lit(False),
                longest=pl.lit(None, pl.Int64),
                k=pl.lit(-1, pl.Int32),
            )
        long = long.with_columns(_hour=pl.col("t") // _HOUR).sort("_i")
        clients = np.zeros(long.height, dtype=np.int64)
        own = np.zeros(long.height, dtype=bool)
        for hour in long.get_column("_hour").unique().sort().to_list():
            self._fold(hour)  # the popularity as it stood at the start of that hour
            at = (long.get_column("_hour") == hour).to_numpy()
            part = long.filter(pl.Series(at))
            clients[at], own[at] = self.popularity.lookup(
                address_hash(part.get_column("peer")), host_hash(part, host="host")
            )
        long = long.with_columns(
            clients=pl.Series(clients, dtype=pl.Int64), own=pl.Series(own, dtype=pl.Boolean)
        ).join(
            self.services.with_columns(service=pl.lit(True)),
            on=["dst_port", "proto"],
            how="left",
            maintain_order="left",
        )
        if s.learn_normal:
            long = long.join(self.norms, on=["dest", "dst_port", "proto"], how="left")
        else:
            long = long.with_columns(longest=pl.lit(None, pl.Int64))
        g = s.growth
        base = (
            pl.lit(s.min_duration * 1e6)
            * pl.when(pl.col("service").fill_null(False)).then(g).otherwise(1.0)
            * pl.when(pl.col("clients") > s.popular_clients).then(g).otherwise(1.0)
        )
        long = long.with_columns(
            service=pl.col("service").fill_null(False),
            bar=pl.max_horizontal(base, pl.col("longest").cast(pl.Float64) * g),
        )
        dur = (pl.col("_end") - pl.col("_start")).cast(pl.Float64)
        k = (dur / pl.col("bar")).log() / math.log(g)
        return long.with_columns(
            k=pl.when(dur >= pl.col("bar")).then((k + 1e-9).floor()).otherwise(-1).cast(pl.Int32)
        )

    def _once_per_communication(self, crossing: pl.DataFrame) -> pl.DataFrame:
        """Crossings that alarm: a communication that alarmed at a level within
        ``repeat_after`` stays quiet at that level (parallel or reopened connections);
        few rows, in event order."""
        repeat = int(self.s.repeat_after * 1_000_000)
        crossing = crossing.sort("_i", maintain_order=True)
        memory = {
            tuple(r[:5]): (r[5], r[6]) for r in self.alarmed.iter_rows()
        }  # comm -> (level, t)
        keep, new = [], []
        for i, row in enumerate(crossing.select(*COMM, "k", "t").iter_rows()):
            comm, k, t = tuple(row[:5]), row[5], row[6]
            level, when = memory.get(comm, (-1, None))
            if when is not None and t - when <= repeat and k <= level:
                continue
            memory[comm] = (k, t)
            keep.append(i)
            new.append(comm)
        if new:
            rows = [
                dict(zip(COMM, c, strict=True)) | {"level": memory[c][0], "t": memory[c][1]}
                for c in dict.fromkeys(new)
            ]
            fresh = pl.DataFrame(rows, schema=self.alarmed.schema)
            self.alarmed = pl.concat([self.alarmed.join(fresh, on=list(COMM), how="anti"), fresh])
            self.alarmed = self.alarmed.sort(list(COMM))
        return crossing[keep]

    def _prune(self, newest: object) -> None:
        if isinstance(newest, int):
            gap = int(self.s.join_gap * 1_000_000)
            self.chains = self.chains.filter(pl.col("end") + gap >= newest)
            repeat = int(self.s.repeat_after * 1_000_000)
            self.alarmed = self.alarmed.filter(pl.col("t") >= newest - repeat)

    def _describe(self, rows: pl.DataFrame) -> pl.DataFrame:
        s = self.s
        secs = (pl.col("_end") - pl.col("_start")).cast(pl.Float64) / 1e6
        bar = pl.col("bar") / 1e6
        level = bar * pl.lit(s.growth).pow(pl.col("k").cast(pl.Float64))
        magnitude = ((secs / bar).log() / math.log(24.0)).clip(0.0, 1.0)
        factor = pl.when(pl.col("direction") == EAST_WEST).then(s.east_west_factor).otherwise(1.0)
        entity = (
            pl.when(pl.col("src_internal"))
            .then("src_ip")
            .when(pl.col("dst_internal"))
            .then("dst_ip")
            .otherwise("src_ip")
        )
        start = pl.col("_start").cast(pl.Datetime("us", "UTC"))
        records = (
            pl.when(pl.col("_records") > 1)
            .then(
                pl.concat_str(
                    [pl.lit(", "), pl.col("_records").cast(pl.String), pl.lit(" records joined")]
                )
            )
            .otherwise(pl.lit(""))
        )
        alarms = rows.select(
            method=pl.lit(self.method),
            name=pl.lit(self.title),
            ts=pl.col("t").cast(UTC_US),
            ts_end=pl.col("_end").cast(UTC_US),
            site="site",
            src_ip="src_ip",
            dst_ip="dst_ip",
            dst_port="dst_port",
            proto="proto",
            direction="direction",
            score=((0.4 + 0.6 * magnitude) * factor).clip(0.0, 1.0),
            entity=entity,
            observed=pl.concat_str([pl.lit("open "), _hours(secs), records]),
            expected=pl.concat_str(
                [pl.lit("connections to this destination shorter than "), _hours(level)]
            ),
            observed_value=secs,
            expected_value=level,
            threshold=level,
            reason=pl.concat_str(
                [
                    pl.lit("long connection "),
                    pl.col("src_ip"),
                    pl.lit(":"),
                    pl.col("src_port").cast(pl.String),
                    pl.lit(" -> "),
                    endpoint(pl.col("dst_ip"), pl.col("dst_port"), pl.col("proto")),
                    pl.lit(" open "),
                    _hours(secs),
                    pl.lit(" since "),
                    start.dt.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    records,
                    pl.lit("; "),
                    _bytes(pl.col("_sb")),
                    pl.lit(" sent, "),
                    _bytes(pl.col("_db")),
                    pl.lit(" received, "),
                    pl.col("_pk").cast(pl.String),
                    pl.lit(" packets; alarms from "),
                    _hours(bar),
                    pl.lit(" ("),
                    self._why(),
                    pl.lit(")"),
                ]
            ),
        )
        alarms = alarms.sort("ts", "src_ip", "dst_ip", "dst_port", maintain_order=True)
        return conform_alarms(alarms.filter(pl.col("score") >= s.min_score))

    def _why(self) -> pl.Expr:
        """Why the bar is where it is, readable."""
        s = self.s
        clients = pl.col("clients")
        peer = pl.when(clients > s.popular_clients).then(
            pl.lit(f"popular: more than {s.popular_clients} internal hosts talk to it")
        )
        peer = peer.when(clients == 0).then(pl.lit("no internal host talked to it before"))
        peer = peer.when((clients == 1) & pl.col("own")).then(
            pl.lit("only this host talked to it before")
        )
        peer = peer.otherwise(
            pl.concat_str(
                [
                    clients.cast(pl.String),
                    pl.when(clients == 1)
                    .then(pl.lit(" internal host talked to it before"))
                    .otherwise(pl.lit(" internal hosts talked to it before")),
                ]
            )
        )
        service = pl.when(pl.col("service")).then(
            pl.concat_str(
                [
                    pl.col("dst_port").cast(pl.String),
                    pl.lit("/"),
                    pl.col("proto").replace_strict(
                        {v: k for k, v in _PROTOS.items()}, default=pl.col("proto").cast(pl.String)
                    ),
                    pl.lit(" holds long sessions by design; "),
                ]
            )
        )
        learned = pl.when(pl.col("longest").is_not_null()).then(
            pl.concat_str(
                [
                    pl.lit("; its longest while learning "),
                    _hours(pl.col("longest").cast(pl.Float64) / 1e6),
                ]
            )
        )
        return pl.concat_str([service.otherwise(pl.lit("")), peer, learned.otherwise(pl.lit(""))])

    def state(self) -> dict[str, pa.Table]:
        pairs, popular = self.popularity.to_arrow()
        return {
            "chains": self.chains.to_arrow(),
            "norms": self.norms.to_arrow(),
            "alarmed": self.alarmed.to_arrow(),
            "popularity_pairs": pairs,
            "popularity_popular": popular,
            "pending": self.pending.to_arrow(),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.chains = restore_frame(state.get("chains"), _CHAIN)
        self.norms = restore_frame(state.get("norms"), _NORMS)
        self.alarmed = restore_frame(state.get("alarmed"), _ALARMED)
        self.popularity.load(state.get("popularity_pairs"), state.get("popularity_popular"))
        self.pending = restore_frame(state.get("pending"), _PENDING)


def _dest(peer: pl.Expr, internal: pl.Expr) -> pl.Expr:
    """A destination's key: an external IPv4 address stands for its /24 (cloud services
    rotate addresses within their networks); internal servers and IPv6 as they are."""
    v4 = peer.str.contains(r"^\d+\.\d+\.\d+\.\d+$")
    net = peer.str.replace(r"\.\d+$", ".0/24")
    return pl.when(v4 & ~internal).then(net).otherwise(peer)


def _hours(seconds: pl.Expr) -> pl.Expr:
    """``45 min``, ``3.5 h`` or ``2.1 d``."""
    return (
        pl.when(seconds < 5400)
        .then(
            pl.concat_str([(seconds / 60).round(0).cast(pl.Int64).cast(pl.String), pl.lit(" min")])
        )
        .when(seconds < 172800)
        .then(pl.concat_str([(seconds / 3600).round(1).cast(pl.String), pl.lit(" h")]))
        .otherwise(pl.concat_str([(seconds / 86400).round(1).cast(pl.String), pl.lit(" d")]))
    )


def _bytes(n: pl.Expr) -> pl.Expr:
    """``512 B``, ``12.3 kB``, ``4.5 MB``, ``1.2 GB``."""
    x = n.cast(pl.Float64)
    return (
        pl.when(x < 1e3)
        .then(pl.concat_str([n.cast(pl.String), pl.lit(" B")]))
        .when(x < 1e6)
        .then(pl.concat_str([(x / 1e3).round(1).cast(pl.String), pl.lit(" kB")]))
        .when(x < 1e9)
        .then(pl.concat_str([(x / 1e6).round(1).cast(pl.String), pl.lit(" MB")]))
        .otherwise(pl.concat_str([(x / 1e9).round(1).cast(pl.String), pl.lit(" GB")]))
    )
