"""M30 new internal device and M31 new external device.

A device is an address of a site. An internal address counts as present when it
*sends* something (a client of any flow, or a server that answered), so a scan of
empty addresses does not invent devices; an external address counts as soon as any
flow involves it, because in networks that should only reach the internet through
a proxy even an attempt to reach a new address matters. Local-scope addresses
(multicast, broadcast, link-local, loopback) are never devices.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from pydantic import Field

from flowhawk import netaddr
from flowhawk.detectors.base import (
    UTC_US,
    Batch,
    Detector,
    DetectorContext,
    DetectorSettings,
    comm_columns,
    conform_alarms,
    empty_alarms,
)
from flowhawk.detectors.seen import SeenSet
from flowhawk.detectors.text import endpoint, history_span, service

_KEY_SCHEMA: dict[str, pl.DataType] = {"site": pl.String(), "ip": pl.String()}
_COMM = ["ts_start", "ts_end", "site", "src_ip", "dst_ip", "dst_port", "proto", "direction"]


class NewDevice(Detector):
    """Shared logic of M30 and M31; subclasses say which side of the network they watch."""

    internal: bool

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        self.devices = SeenSet(("site", "ip"), _KEY_SCHEMA)
        self.since: object | None = None

    def _new_devices(self, flows: pl.DataFrame, remember: bool) -> pl.DataFrame:
        """First appearance of each device not seen before, with the flow it appeared in.

        Appearances are ordered by flow, client side before server side; only the
        few new ones are joined back to their flows' columns.
        """
        want = self.internal
        server_rule = pl.col("dst_internal") == want
        if want:
            server_rule = server_rule & (pl.col("dst_pkts") > 0)
        idx = flows.select("site", "src_ip", "dst_ip", "src_internal", server_rule.alias("_srv"))
        idx = idx.with_row_index("_row")
        cand = pl.concat(
            [
                idx.filter(pl.col("src_internal") == want).select(
                    "site", ip=pl.col("src_ip"), _order=pl.col("_row") * 2, _row=pl.col("_row")
                ),
                idx.filter(pl.col("_srv")).select(
                    "site", ip=pl.col("dst_ip"), _order=pl.col("_row") * 2 + 1, _row=pl.col("_row")
                ),
            ]
        ).sort("_order")
        cand = cand.with_columns(ts_start=flows.get_column("ts_start").gather(cand["_row"]))
        new = self.devices.first_new(cand, remember=remember)
        if new.height and len(self.context.local_scope):
            hi, lo, _ = netaddr.parse(new.get_column("ip"))
            new = new.filter(pl.Series(~self.context.local_scope.contains(hi, lo)))
        role = pl.when(pl.col("_order") % 2 == 0).then(pl.lit("client")).otherwise(pl.lit("server"))
        context = flows.select(_COMM)[new.get_column("_row")]
        return pl.concat([new.select("ip", role=role), context], how="horizontal")

    def learn(self, batch: Batch) -> None:
        flows = batch.flows
        if flows.height and self.since is None:
            self.since = flows.get_column("ts_start").min()
        self._new_devices(flows, remember=True)

    def score(self, batch: Batch) -> pl.DataFrame:
        flows = batch.flows
        if flows.height == 0:
            return empty_alarms()
        if self.since is None:
            self.since = flows.get_column("ts_start").min()
        new = self._new_devices(flows, remember=True)
        if new.height == 0:
            return empty_alarms()
        kind = "internal" if self.internal else "external"
        peer = (
            pl.when(pl.col("role") == "client")
            .then(
                pl.concat_str(
                    [
                        pl.lit("client of "),
                        endpoint(pl.col("dst_ip"), pl.col("dst_port"), pl.col("proto")),
                    ]
                )
            )
            .otherwise(
                pl.concat_str(
                    [
                        pl.lit("server for "),
                        pl.col("src_ip"),
                        pl.lit(" on "),
                        service(pl.col("dst_port"), pl.col("proto")),
                    ]
                )
            )
        )
        alarms = new.select(
            **comm_columns(self.method, self.title),
            score=pl.lit(1.0),
            entity=pl.col("ip"),
            observed=pl.concat_str([pl.lit(f"new {kind} address "), pl.col("ip")]),
            expected=pl.concat_str(
                [
                    pl.lit("not seen in "),
                    history_span(pl.lit(self.since, dtype=UTC_US), pl.col("ts_start")),
                    pl.lit(" of history"),
                ]
            ),
            observed_value=pl.lit(1.0),
            expected_value=pl.lit(0.0),
            reason=pl.concat_str(
                [pl.lit(f"new {kind} device "), pl.col("ip"), pl.lit(", first seen as "), peer]
            ),
        )
        return conform_alarms(alarms.filter(pl.col("score") >= self.settings.min_score))

    def state(self) -> dict[str, pa.Table]:
        return {
            "devices": self.devices.to_arrow(),
            "since": pa.table({"since": pa.array([self.since], pa.timestamp("us", "UTC"))}),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.devices.load(state.get("devices"))
        since = state.get("since")
        self.since = since.column("since")[0].as_py() if since is not None else None


class NewInternalSettings(DetectorSettings):
    weight: float = Field(default=60.0, ge=0, le=100)


class NewExternalSettings(DetectorSettings):
    weight: float = Field(default=20.0, ge=0, le=100)


class NewInternalDevice(NewDevice):
    method = "M30"
    title = "new internal device"
    Settings = NewInternalSettings
    internal = True


class NewExternalDevice(NewDevice):
    method = "M31"
    title = "new external device"
    Settings = NewExternalSettings
    internal = False
