"""M1: a communication (site, client, server, server port, protocol) never seen before.

FlowScape's first method. The score says *how* new it is: a new peer on a
service both sides already use scores 0.5; a known client using this service for
the first time adds 0.25 (a workstation that suddenly speaks SSH or SMB); a known
server answering on this port for the first time adds 0.25 (a new listening
service). Hosts that are themselves new get no bonus: M30/M31 report them.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from pydantic import Field

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

_KEY_SCHEMA: dict[str, pl.DataType] = {
    "site": pl.String(),
    "src_ip": pl.String(),
    "dst_ip": pl.String(),
    "dst_port": pl.Int32(),
    "proto": pl.Int16(),
}
COMM = ("site", "src_ip", "dst_ip", "dst_port", "proto")
CLIENT_SERVICE = ("site", "src_ip", "dst_port", "proto")
SERVER_SERVICE = ("site", "dst_ip", "dst_port", "proto")


class NewCommSettings(DetectorSettings):
    weight: float = Field(default=30.0, ge=0, le=100)
    require_answer: bool = Field(
        default=False,
        description="Only flows the server answered (dst_pkts > 0) count as communications.",
    )


class NewCommunication(Detector):
    method = "M1"
    title = "new communication"
    Settings = NewCommSettings

    def __init__(self, settings: DetectorSettings, context: DetectorContext):
        super().__init__(settings, context)
        self.comms = SeenSet(COMM, _KEY_SCHEMA)
        self.client_services = SeenSet(CLIENT_SERVICE, _KEY_SCHEMA)
        self.server_services = SeenSet(SERVER_SERVICE, _KEY_SCHEMA)
        self.hosts = SeenSet(("site", "ip"), {"site": pl.String(), "ip": pl.String()})
        self.since: object | None = None  # first event time learned (datetime)

    def _eligible(self, flows: pl.DataFrame) -> pl.DataFrame:
        assert isinstance(self.settings, NewCommSettings)
        if self.settings.require_answer:
            flows = flows.filter(pl.col("dst_pkts") > 0)
        return flows

    def _remember(self, flows: pl.DataFrame) -> None:
        if flows.height and self.since is None:
            self.since = flows.get_column("ts_start").min()
        for seen in (self.comms, self.client_services, self.server_services):
            seen.add(flows)
        self.hosts.add(_hosts(flows))

    def learn(self, batch: Batch) -> None:
        flows = batch.flows
        self._remember(self._eligible(flows))

    def score(self, batch: Batch) -> pl.DataFrame:
        flows = batch.flows
        flows = self._eligible(flows)
        if flows.height == 0:
            return empty_alarms()
        if self.since is None:
            self.since = flows.get_column("ts_start").min()
        rows = flows.with_row_index("_row")
        new = self.comms.first_new(rows, remember=True)
        client_new = self.client_services.first_new(rows, remember=True).get_column("_row")
        server_new = self.server_services.first_new(rows, remember=True).get_column("_row")
        if new.height:
            new = self._with_known_hosts(new, rows).with_columns(
                _client_new=pl.col("_row").is_in(client_new.implode()) & pl.col("_src_known"),
                _server_new=pl.col("_row").is_in(server_new.implode()) & pl.col("_dst_known"),
            )
        self.hosts.add(_hosts(flows))
        if new.height == 0:
            return empty_alarms()
        since = pl.lit(self.since, dtype=UTC_US)
        svc = service(pl.col("dst_port"), pl.col("proto"))
        score = (
            0.5
            + pl.col("_client_new").cast(pl.Float64) * 0.25
            + pl.col("_server_new").cast(pl.Float64) * 0.25
        )
        alarms = new.select(
            **comm_columns(self.method, self.title),
            score=score,
            observed=pl.concat_str(
                [
                    pl.lit("first flow "),
                    pl.col("src_ip"),
                    pl.lit(" -> "),
                    endpoint(pl.col("dst_ip"), pl.col("dst_port"), pl.col("proto")),
                ]
            ),
            expected=pl.concat_str(
                [
                    pl.lit("not seen in "),
                    history_span(since, pl.col("ts_start")),
                    pl.lit(" of history"),
                ]
            ),
            observed_value=pl.lit(1.0),
            expected_value=pl.lit(0.0),
            reason=pl.concat_str(
                [
                    pl.lit("new communication "),
                    pl.col("src_ip"),
                    pl.lit(" -> "),
                    pl.col("dst_ip"),
                    pl.lit(" on "),
                    svc,
                    pl.when(pl.col("_client_new"))
                    .then(pl.concat_str([pl.lit("; client never used "), svc, pl.lit(" before")]))
                    .otherwise(pl.lit("")),
                    pl.when(pl.col("_server_new"))
                    .then(
                        pl.concat_str(
                            [pl.lit("; server never answered on "), svc, pl.lit(" before")]
                        )
                    )
                    .otherwise(pl.lit("")),
                ]
            ),
        )
        return conform_alarms(alarms.filter(pl.col("score") >= self.settings.min_score))

    def _with_known_hosts(self, new: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
        """Mark whether client and server were known before each new communication's row."""
        first = _hosts(rows).group_by("site", "ip").agg(_first=pl.col("_row").min())
        first = first.with_columns(_in_state=pl.Series(self.hosts.contains(first)))
        for side in ("src", "dst"):
            new = (
                new.join(
                    first.rename({"ip": f"{side}_ip", "_first": "_f", "_in_state": "_s"}),
                    on=["site", f"{side}_ip"],
                    how="left",
                )
                .with_columns(
                    (pl.col("_s") | (pl.col("_f") < pl.col("_row"))).alias(f"_{side}_known")
                )
                .drop("_f", "_s")
            )
        return new

    def state(self) -> dict[str, pa.Table]:
        return {
            "comms": self.comms.to_arrow(),
            "client_services": self.client_services.to_arrow(),
            "server_services": self.server_services.to_arrow(),
            "hosts": self.hosts.to_arrow(),
            "since": pa.table({"since": pa.array([self.since], pa.timestamp("us", "UTC"))}),
        }

    def load_state(self, state: dict[str, pa.Table]) -> None:
        self.comms.load(state.get("comms"))
        self.client_services.load(state.get("client_services"))
        self.server_services.load(state.get("server_services"))
        self.hosts.load(state.get("hosts"))
        since = state.get("since")
        self.since = since.column("since")[0].as_py() if since is not None else None


def _hosts(flows: pl.DataFrame) -> pl.DataFrame:
    """Both ends of every flow as (site, ip[, _row], ts_start) rows, in flow order."""
    extra = ["_row"] if "_row" in flows.columns else []
    return pl.concat(
        [
            flows.select("site", pl.col("src_ip").alias("ip"), *extra, "ts_start"),
            flows.select("site", pl.col("dst_ip").alias("ip"), *extra, "ts_start"),
        ]
    )
