"""The long-running service: collectors, live detection, event store, outputs, API.

One process, no other server: :class:`Service` owns the components and their order.
Start: restore (templates, models, outbox, tokens) and start delivery, then the
collector (which starts live detection). Detection's stored events go to the
:class:`~flowhawk.serve.publish.Publisher`, which hands news to the outputs (durable
outbox) and to the live stream. Stop (SIGTERM/SIGINT through the API server, or
:meth:`stop`): the collector decodes what is queued, archives it, detection closes
its buckets and checkpoints, the last events are published, then delivery gets a few
seconds to flush (what it cannot deliver stays in the outbox for the next start).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from flowhawk import __version__, intelstore
from flowhawk.archive import apply_retention
from flowhawk.behavior.log import LogStore
from flowhawk.config import Config, Route
from flowhawk.intel import IntelSet
from flowhawk.serve.auth import AuthStore
from flowhawk.serve.eventdb import EventDB
from flowhawk.serve.policies import Policies, Subscription, subscription_output
from flowhawk.serve.publish import Publisher
from flowhawk.serve.stream import Broadcaster

log = logging.getLogger("flowhawk.serve")

#: How often retention runs (and how long the first run waits after the start).
RETENTION_EVERY = 3600.0


class Service:
    """All components of ``flowhawk serve`` over one data directory."""

    def __init__(
        self,
        cfg: Config,
        data_dir: Path,
        *,
        collect: bool = True,
        intel: Sequence[str | Path] = (),
    ):
        from flowhawk.outputs import OUTPUTS, validate
        from flowhawk.outputs.delivery import Delivery

        self.cfg = cfg
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.started = datetime.now(UTC)
        self.registry = CollectorRegistry()
        self.auth = AuthStore(data_dir)
        self.db = EventDB(data_dir)
        self.stream = Broadcaster(cfg.serve.stream_queue)
        self.policies = Policies(data_dir, cfg.routes)
        outputs = [
            OUTPUTS.get(s.type)(s, data_dir) for s in validate(cfg.outputs, "config [[outputs]]")
        ]
        self.delivery = Delivery(outputs, self.policies.routes, data_dir, self.registry)
        for record in self.policies.subscriptions.values():
            self._add_subscription(record)
        self.publisher = Publisher(self.db, self.stream, self.delivery, self.registry)
        self.collector = None
        if collect:
            from flowhawk.collect.collector import Collector

            quiet = cfg.model_copy(
                update={"collect": cfg.collect.model_copy(update={"metrics": ""})}
            )
            self.collector = Collector(quiet, data_dir, on_events=self.publisher, intel=intel)
        self.registry.register(_ServiceGauges(self))
        self._intel: IntelSet | bool | None = False
        self._extra_intel = list(intel)
        self.intel_failures = 0
        self.intel_checked: datetime | None = None
        self._pdns: Any = False
        self._stop = threading.Event()
        self._retention: threading.Thread | None = None
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.delivery.start()
        self._publish_unpublished()
        if self.collector is not None:
            self.collector.start()
            self.collector.run_in_thread()
        self._retention = threading.Thread(
            target=self._retention_loop, name="flowhawk-retention", daemon=True
        )
        self._retention.start()
        if (self.cfg.intel.feeds or self._extra_intel) and self.cfg.intel.refresh:
            threading.Thread(target=self._intel_loop, name="flowhawk-intel", daemon=True).start()

    def _publish_unpublished(self) -> None:
        """Hand the outputs the events stored right before a crash that kept them from
        being published (:data:`flowhawk.live.UNPUBLISHED`); duplicates are allowed."""
        from flowhawk.live import forget_unpublished, take_unpublished

        docs = take_unpublished(self.data_dir)
        stored = self.db.workflow([d["id"] for d in docs]) if docs else {}
        docs = [d for d in docs if d["id"] in stored]
        if docs:
            self.delivery.publish(self.publisher.news(docs))
            log.warning("published %d events stored before the last stop was cut short", len(docs))
        forget_unpublished(self.data_dir)

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Stop collecting, detect and publish what is queued, checkpoint, flush outputs."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self.collector is not None:
            self.collector.stop()
        self.stream.close_all()
        self.delivery.stop(flush_timeout)
        self.db.close()

    # -- what the API asks -------------------------------------------------------------

    def output_names(self) -> list[str]:
        return [s["name"] for s in self.delivery.status()]

    def set_routes(self, routes: list[Route], user: str) -> None:
        self.policies.set_routes(routes, user)
        self.delivery.set_routes(routes)

    def subscribe(self, sub: Subscription, owner: str) -> dict[str, Any]:
        record = self.policies.subscribe(sub, owner)
        self._add_subscription(record)
        return record

    def unsubscribe(self, sid: str) -> None:
        self.delivery.remove_output(sid)
        self.policies.unsubscribe(sid)

    def _add_subscription(self, record: dict[str, Any]) -> None:
        from flowhawk.outputs import OUTPUTS

        settings, route = subscription_output(record)
        cls = OUTPUTS.get("webhook")
        self.delivery.add_output(cls(cls.Settings.model_validate(settings), self.data_dir), [route])

    def intel(self) -> IntelSet | None:
        if self.collector is not None and self.collector.detection is not None:
            return self.collector.detection.intel
        if self._intel is False:
            self._intel = intelstore.for_run(self.cfg, self.data_dir, self._extra_intel)
        return self._intel  # type: ignore[return-value]

    def passive_dns(self) -> Any:
        if self.collector is not None and self.collector.detection is not None:
            return self.collector.detection.context.passive_dns()
        if self._pdns is False:
            from flowhawk.dns.passive import PassiveDns

            self._pdns = PassiveDns.in_data_dir(self.data_dir)
        return self._pdns

    def exporters(self) -> pl.DataFrame:
        if self.collector is not None:
            return self.collector.inventory.table()
        from flowhawk.collect.inventory import Inventory, inventory_path

        if not inventory_path(self.data_dir).exists():
            return pl.DataFrame()
        return Inventory.load(self.data_dir).table()

    def newest_bucket(self) -> datetime | None:
        """Event time now: the behavioral log's closed time, else the newest event's end."""
        det = self.collector.detection if self.collector is not None else None
        if det is not None and det.engine.buffer.closed_until is not None:
            return det.engine.buffer.closed_until
        row = self.db.cursor().execute("SELECT epoch_us(max(ts_end)) FROM events").fetchall()[0]
        return datetime.fromtimestamp(row[0] / 1e6, UTC) if row and row[0] is not None else None

    def status(self, admin: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": __version__,
            "started": self.started.isoformat().replace("+00:00", "Z"),
            "uptime_s": round((datetime.now(UTC) - self.started).total_seconds(), 1),
            "stream_clients": self.stream.clients,
        }
        if self.collector is not None:
            totals = asdict(self.collector.totals)
            totals["decode_errors"] = dict(totals["decode_errors"])
            out["collector"] = {"listen": [{"address": a, "udp_port": p}
                                           for a, p in self.collector.ports()],
                                **totals}  # fmt: skip
            if self.collector.detection is not None:
                det = self.collector.detection
                out["detection"] = {**asdict(det.totals), "queued_batches": det.pending,
                                    "queued_flows": det.queued_flows}  # fmt: skip
        if admin:
            out["outputs"] = self.delivery.status()
        return out

    def metrics_text(self) -> bytes:
        text = generate_latest(self.registry)
        if self.collector is not None:
            text += generate_latest(self.collector.metrics.registry)
        return text

    # -- intelligence ------------------------------------------------------------------

    def _intel_loop(self) -> None:
        while not self._stop.wait(self.cfg.intel.refresh or 3600.0):
            try:
                self.refresh_intel()
            except Exception:
                self.intel_failures += 1
                log.exception("reloading the intelligence feeds failed (kept the loaded set)")

    def refresh_intel(self) -> bool:
        """Reload the feeds; detect with (and snapshot) the new set when its version changed."""
        new = intelstore.for_run(self.cfg, self.data_dir, self._extra_intel)
        old = self.intel()
        self.intel_checked = datetime.now(UTC)
        if new is None or (old is not None and new.version == old.version):
            return False
        intelstore.save_current(new, self.data_dir)
        if self.collector is not None and self.collector.detection is not None:
            self.collector.detection.set_intel(new)
        else:
            self._intel = new
        log.warning("threat intelligence %s loaded: %d indicators", new.version, len(new))
        return True

    # -- retention ---------------------------------------------------------------------

    def _retention_loop(self) -> None:
        while not self._stop.wait(RETENTION_EVERY):
            try:
                self.apply_retention()
            except Exception:
                log.exception("retention failed (will try again)")

    def apply_retention(self, now: datetime | None = None) -> dict[str, int]:
        """Drop events, flows and behavioral log past their retention (event time)."""
        now = now or self.newest_bucket() or datetime.now(UTC)
        done = {"events": 0, "flow_hours": 0, "log_hours": 0}
        if self.cfg.serve.events_retention:
            done["events"] = self.db.delete_older(
                now - timedelta(seconds=self.cfg.serve.events_retention)
            )
        if self.cfg.archive.retention:
            done["flow_hours"] = apply_retention(
                self.data_dir / "flows", self.cfg.archive.retention, now
            )
        done["log_hours"] = LogStore(self.data_dir / "behavior", "retention").apply_retention(
            self.cfg.behavior.retention, now
        )
        return done


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


class _ServiceGauges:
    """Gauges computed when scraped: lag, queues, stream clients, state sizes."""

    def __init__(self, svc: Service):
        self.svc = svc

    def collect(self):  # type: ignore[no-untyped-def]
        svc = self.svc
        g = GaugeMetricFamily("flowhawk_stream_clients", "Clients of the live event stream.")
        g.add_metric([], svc.stream.clients)
        yield g
        yield from self._exporters()
        det = svc.collector.detection if svc.collector is not None else None
        if det is not None:
            q = GaugeMetricFamily(
                "flowhawk_detection_queue_batches", "Archived batches waiting for detection."
            )
            q.add_metric([], det.pending)
            yield q
            qf = GaugeMetricFamily(
                "flowhawk_detection_queue_flows",
                f"Archived flows waiting for detection (at most {det.max_queued_flows}).",
            )
            qf.add_metric([], det.queued_flows)
            yield qf
            lag = GaugeMetricFamily(
                "flowhawk_detection_lag_seconds",
                "Wall clock minus the end of the newest flow detection has processed.",
            )
            newest = det.totals.newest_flow
            lag.add_metric([], (time.time() - newest.timestamp()) if newest else 0.0)
            yield lag
            for name, value in (("flows", det.totals.flows), ("alarms", det.totals.alarms),
                                ("failed_batches", det.totals.errors),
                                ("late_flows", det.totals.late_flows),
                                ("skipped_flows", det.totals.skipped_flows)):  # fmt: skip
                c = GaugeMetricFamily(f"flowhawk_detection_{name}", f"Detection {name} so far.")
                c.add_metric([], value)
                yield c
        intel = svc.intel()
        ind = GaugeMetricFamily(
            "flowhawk_intel_indicators",
            "Indicators of the intelligence set in use.",
            labels=["version"],
        )
        if intel is not None:
            ind.add_metric([intel.version], len(intel))
        yield ind
        fails = CounterMetricFamily(
            "flowhawk_intel_refresh_failures", "Feed reloads that failed (the set in use stays)."
        )
        fails.add_metric([], svc.intel_failures)
        yield fails
        size = GaugeMetricFamily(
            "flowhawk_state_bytes",
            "Bytes on disk per store of the data directory.",
            labels=["store"],
        )
        for store in ("state", "events.duckdb", "outbox.sqlite", "flows", "behavior", "intel"):
            size.add_metric([store], _dir_bytes(svc.data_dir / store))
        yield size
        free = GaugeMetricFamily("flowhawk_data_free_bytes", "Free bytes on the data disk.")
        free.add_metric([], shutil.disk_usage(svc.data_dir).free)
        yield free

    def _exporters(self):  # type: ignore[no-untyped-def]
        """Per exporter, protocol and observation domain: flows, lost records, errors."""
        if self.svc.collector is None:
            return
        try:
            table = self.svc.collector.inventory.table()
        except RuntimeError:  # the collector thread added an exporter meanwhile
            return
        labels = ["exporter", "protocol", "domain"]
        families = {
            "flows": CounterMetricFamily(
                "flowhawk_exporter_flows", "Flow records decoded per exporter.", labels=labels
            ),
            "lost": CounterMetricFamily(
                "flowhawk_exporter_lost_records",
                "Records an exporter's sequence numbers say never arrived.",
                labels=labels,
            ),
            "errors": CounterMetricFamily(
                "flowhawk_exporter_decode_errors", "Decode errors per exporter.", labels=labels
            ),
        }
        for row in table.iter_rows(named=True):
            key = [row["exporter"], row["protocol"], str(row["domain"])]
            for name, family in families.items():
                family.add_metric(key, row[name] or 0)
        yield from families.values()
