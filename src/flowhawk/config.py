"""The configuration: one validated object, loaded from TOML, printable, strict.

Every setting is declared once here (name, default, help). Unknown keys are errors
that name the key and the file. Durations are written as seconds or as text such
as ``"90s"``, ``"15m"``, ``"1h"``, ``"7d"``. Detector settings live under
``[detectors.<METHOD>]`` and are validated by the detector's own settings model.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from flowhawk.errors import ConfigError
from flowhawk.intel.settings import IntelSettings
from flowhawk.netaddr import parse_network
from flowhawk.settingtypes import Duration, format_duration, parse_duration

__all__ = ["Config", "Duration", "Strict", "format_duration", "load", "parse_duration"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _check_networks(values: list[str]) -> list[str]:
    out = []
    for v in values:
        try:
            out.append(parse_network(v).text)
        except ValueError as exc:
            raise ValueError(f"{v!r} is not a network or address ({exc})") from None
    return out


class NetworkSettings(Strict):
    internal: list[str] = Field(
        default=["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
        description="Internal networks (RFC 1918 and IPv6 ULA by default).",
    )
    local_scope: list[str] = Field(
        default=[
            "0.0.0.0/32",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "224.0.0.0/4",
            "255.255.255.255/32",
            "::/128",
            "::1/128",
            "fe80::/10",
            "ff00::/8",
        ],
        description=(
            "Addresses that never leave the local network (loopback, link-local, multicast, "
            "broadcast): counted as internal for direction, never reported as new devices."
        ),
    )

    _v = field_validator("internal", "local_scope")(_check_networks)


class Site(Strict):
    name: str
    exporters: list[str] = Field(
        default=[], description="Exporter / sensor addresses of this site."
    )
    networks: list[str] = Field(default=[], description="Networks that belong to this site.")

    _v = field_validator("networks")(_check_networks)


class HostGroup(Strict):
    name: str
    networks: list[str] = Field(description="Addresses or networks in the group.")
    guarded: bool = Field(default=False, description="Guarded servers: their events weigh more.")
    tags: list[str] = []

    _v = field_validator("networks")(_check_networks)


class LearningSettings(Strict):
    period: Duration = Field(
        default=3600.0,
        description="Event time from the first flow during which detectors learn and do not alarm.",
    )


class EventSettings(Strict):
    window: Duration = Field(
        default=3600.0, description="Alarms of one communication in one window form one event."
    )
    top_suspicious: int = Field(default=250, ge=1, description="Rows in suspicious.csv.")
    host_half_life: Duration = Field(
        default=86400.0, description="Half-life of an event's contribution to its hosts' risk."
    )
    min_risk: float = Field(default=0.0, ge=0, le=100, description="Events below this are dropped.")
    guarded_boost: float = Field(
        default=1.5,
        ge=1.0,
        description="Events of guarded servers: risk = 100*(1-(1-risk/100)**boost).",
    )


class ContextSettings(Strict):
    hops: bool = Field(
        default=True,
        description="East-west hops and relays (N9) of risky north-south events.",
    )
    hops_min_risk: float = Field(
        default=50.0,
        ge=0,
        le=100,
        description="North-south events at or above this risk get their east-west hops.",
    )
    hops_window: Duration = Field(
        default=3600.0,
        description=(
            "How long before an outbound event (after an inbound one) east-west hops count."
        ),
    )
    hops_max_edges: int = Field(
        default=20, ge=1, description="Edges kept per hop of an event (the largest by bytes)."
    )
    relay_delay: Duration = Field(
        default=5.0,
        description="Longest delay from a connection a device receives to one it opens (N9).",
    )
    relay_min_pairs: int = Field(
        default=2,
        ge=1,
        description="Times a device must relay one communication into another to count.",
    )
    relay_volume_ratio: float = Field(
        default=4.0,
        ge=1.0,
        description="Two relayed calls (or one): their volumes within this factor of each other.",
    )
    relay_min_correlation: float = Field(
        default=0.7,
        ge=-1.0,
        le=1.0,
        description="Three or more relayed calls: least correlation of their log volumes.",
    )
    geoip: list[Path] = Field(
        default=[],
        description=(
            "MaxMind-format .mmdb files (City, Country, ASN; MaxMind, DB-IP, IPinfo), "
            "earlier ones first; relative to the config file."
        ),
    )
    passive_dns: bool = Field(
        default=True, description="Show names DNS answered for next to addresses in events."
    )


class PcapSettings(Strict):
    active_timeout: Duration = Field(default=1800.0, description="Split flows longer than this.")
    idle_timeout: Duration = Field(
        default=60.0, description="End a non-TCP flow after this silence."
    )
    tcp_idle_timeout: Duration = Field(
        default=300.0, description="End a TCP flow after this silence."
    )


class NormalizeSettings(Strict):
    stitch_gap: Duration = Field(
        default=60.0,
        description="Unidirectional records of one 5-tuple closer than this join one biflow.",
    )


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{value!r} is not a time zone name (e.g. 'UTC', 'Europe/Prague')"
        ) from None
    return value


class TimedInput(Strict):
    timezone: str = Field(
        default="UTC", description="Zone of text timestamps that carry none (e.g. Europe/Prague)."
    )
    time_format: str | None = Field(default=None, description="strftime format of timestamps.")

    _tz = field_validator("timezone")(_check_timezone)


class TabularInput(TimedInput):
    mapping: dict[str, str] = Field(
        default={}, description="Canonical column -> column in the file (ts_start = 'StartTime')."
    )
    time_unit: str | None = Field(default=None, description="s, ms, us or ns for numeric times.")
    duration_unit: str | None = Field(default=None, description="Unit of a duration column.")
    delimiter: str = Field(default=",", description="CSV field separator.")
    proto_names: bool = Field(default=True, description="Protocol column holds names (tcp, udp).")
    uni: bool = Field(default=False, description="Records are unidirectional (stitch them).")


class InputSettings(Strict):
    csv: TabularInput = TabularInput()
    parquet: TabularInput = TabularInput()
    argus: TimedInput = TimedInput()
    nfdump: TimedInput = Field(
        default=TimedInput(), description="nfdump files, and nfdump csv/text output."
    )


class ArchiveSettings(Strict):
    compression: Literal["lz4", "zstd", "snappy", "uncompressed"] = Field(
        default="lz4", description="Parquet codec of the flow archive (zstd: smaller, slower)."
    )
    retention: Duration | None = Field(
        default=None, description="Drop archived flow partitions older than this (event time)."
    )


def _check_listen(values: list[str]) -> list[str]:
    for v in values:
        parse_hostport(v)
    return values


def parse_hostport(text: str) -> tuple[str, int]:
    """``"0.0.0.0:2055"``, ``"[::]:2055"`` or ``"host:port"`` to (host, port)."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.%a-z]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not HOST:PORT (IPv6 in brackets: '[::]:2055')")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port < 65536:  # 0: any free port (tests)
        raise ValueError(f"{text!r}: port must be 0-65535")
    return host, port


class CollectSettings(Strict):
    listen: list[str] = Field(
        default=[
            "0.0.0.0:2055",
            "[::]:2055",  # NetFlow v5/v9 (any protocol is accepted on any port)
            "0.0.0.0:4739",
            "[::]:4739",  # IPFIX
            "0.0.0.0:6343",
            "[::]:6343",  # sFlow v5
        ],
        description="UDP addresses to receive exports on; the protocol is read from each packet.",
    )
    socket_buffer: int = Field(
        default=32 * 1024 * 1024,
        ge=65536,
        description="Receive buffer per socket in bytes (capped by net.core.rmem_max).",
    )
    queue_limit: int = Field(
        default=50_000,
        ge=1000,
        description="Datagrams held between receiving and decoding; beyond it, drops are counted.",
    )
    batch_interval: Duration = Field(default=0.05, description="How often queued datagrams decode.")
    rollover: Duration = Field(
        default=30.0, description="How often flows are written to the archive."
    )
    checkpoint: Duration = Field(
        default=30.0, description="How often templates and stats are saved."
    )
    detect: bool = Field(
        default=True,
        description="Run detection on the flows as they are archived (events in DATA).",
    )
    max_queued_flows: int = Field(
        default=1_000_000,
        ge=1000,
        description="Flows waiting for live detection at most (about 250 bytes each); a "
        "rollover beyond it is archived but not detected, and counted.",
    )
    metrics: str = Field(
        default="127.0.0.1:9754",
        description="HOST:PORT serving Prometheus metrics at /metrics; empty to disable.",
    )
    dns_logs: list[Path] = Field(
        default=[],
        description="Zeek dns.log files (TSV or JSON lines) followed while collecting, like "
        "'tail -F' (rotation and truncation followed, a missing file waited for): their DNS "
        "goes to DATA/dns, passive DNS and live detection (N4, N5).",
    )

    _l = field_validator("listen")(_check_listen)

    @field_validator("dns_logs")
    @classmethod
    def _dns_logs(cls, v: list[Path]) -> list[Path]:
        for i, path in enumerate(v):
            if str(path) in ("", "."):
                raise ValueError("an entry is empty: give the path of a Zeek dns.log")
            if path in v[:i]:
                raise ValueError(f"{str(path)!r} is listed twice")
        return v


class ServeSettings(Strict):
    listen: str = Field(
        default="127.0.0.1:8080",
        description="HOST:PORT of the API, the web UI and /metrics ('[::]:8080' for IPv6).",
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate (chain) to serve the API over HTTPS."
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")
    session_ttl: Duration = Field(
        default=12 * 3600.0, description="How long a sign-in (POST /api/v1/login) lasts."
    )
    events_retention: Duration | None = Field(
        default=None,
        description="Delete events (and their alarms) whose window ended longer ago; "
        "none keeps them.",
    )
    stream_queue: int = Field(
        default=1000,
        ge=10,
        description="Events waiting per live-stream client; a slower client is disconnected.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_hostport(v)
        return v


class Route(Strict):
    name: str = Field(default="route", description="A name for the route (shown in the API).")
    outputs: list[str] = Field(
        default=[], description="Outputs that receive the matching events; empty: all."
    )
    min_risk: float = Field(default=0.0, ge=0, le=100, description="Events at this risk or more.")
    methods: list[str] = Field(
        default=[], description="Events with at least one of these methods; empty: any."
    )
    sites: list[str] = Field(default=[], description="Events of these sites; empty: any.")


class BehaviorSettings(Strict):
    bucket: Duration = Field(
        default=60.0, description="Time bucket of the behavioral log (flows by their start)."
    )
    lateness: Duration = Field(
        default=300.0,
        description="How long a bucket stays open for flows that arrive late (live exports).",
    )
    retention: Duration = Field(
        default=35 * 86400.0, description="Keep the behavioral log this long (event time)."
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: float) -> float:
        if v < 1 or v != int(v) or 86400 % int(v):
            raise ValueError("the bucket is a whole number of seconds dividing a day (e.g. 60)")
        return v


class Config(Strict):
    """The whole configuration."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    default_site: str = Field(default="default", description="Site of flows no site rule matches.")
    network: NetworkSettings = NetworkSettings()
    sites: list[Site] = []
    host_groups: list[HostGroup] = []
    learning: LearningSettings = LearningSettings()
    events: EventSettings = EventSettings()
    context: ContextSettings = Field(
        default_factory=ContextSettings,
        description="What events carry besides alarms: hops, relays, GeoIP/ASN, DNS names.",
    )
    pcap: PcapSettings = PcapSettings()
    normalize: NormalizeSettings = NormalizeSettings()
    input: InputSettings = InputSettings()
    archive: ArchiveSettings = ArchiveSettings()
    collect: CollectSettings = CollectSettings()
    behavior: BehaviorSettings = BehaviorSettings()
    intel: IntelSettings = Field(
        default_factory=IntelSettings,
        description="Threat-intelligence feeds (none by default) and how they count.",
    )
    detectors: dict[str, dict[str, Any]] = Field(
        default={}, description="Per-method settings, e.g. [detectors.M1] enabled = false."
    )
    serve: ServeSettings = ServeSettings()
    outputs: list[dict[str, Any]] = Field(
        default=[],
        description="Where events go besides the store: [[outputs]] tables with a type "
        "(syslog, file, tcp, webhook, email) and its settings.",
    )
    routes: list[Route] = Field(
        default=[],
        description="Which events go to which outputs ([[routes]]); none: every event to "
        "every output. Editable at run time through the API (policies).",
    )

    def detector_settings(self, method: str) -> dict[str, Any]:
        return dict(self.detectors.get(method, {}))


def describe_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key '{loc}'"
    if err["type"] == "missing":
        return f"missing key '{loc}'"
    return f"'{loc}': {err['msg']}"


def from_dict(data: dict[str, Any], origin: str = "config") -> Config:
    """Validate a config mapping; errors name every bad key and what is wrong."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(describe_error(e) for e in exc.errors())
        raise ConfigError(f"{origin}: {problems}") from None
    _validate_detectors(cfg, origin)
    _validate_outputs(cfg, origin)
    return cfg


def _validate_outputs(cfg: Config, origin: str) -> None:
    from flowhawk.outputs import validate

    settings = validate(cfg.outputs, origin)
    cfg.outputs = [s.model_dump() for s in settings]
    names = {s.name for s in settings}
    for route in cfg.routes:
        unknown = [o for o in route.outputs if o not in names]
        if unknown:
            raise ConfigError(
                f"{origin}: [[routes]] {route.name!r} names unknown output(s) "
                f"{', '.join(unknown)}; outputs: {', '.join(sorted(names)) or 'none'}"
            )


def _validate_detectors(cfg: Config, origin: str) -> None:
    from flowhawk.detectors import DETECTORS  # late: detectors import config types

    validated: dict[str, dict[str, Any]] = {}
    for method, settings in cfg.detectors.items():
        if method not in DETECTORS:
            known = ", ".join(DETECTORS.names())
            raise ConfigError(
                f"{origin}: unknown detector '{method}' in [detectors]; known: {known}"
            )
        model = DETECTORS.get(method).Settings
        try:
            validated[method] = model.model_validate(settings).model_dump()
        except ValidationError as exc:
            problems = "; ".join(describe_error(e) for e in exc.errors())
            raise ConfigError(f"{origin}: [detectors.{method}] {problems}") from None
    cfg.detectors = validated


def load(path: Path | None) -> Config:
    """Load the TOML file at ``path``, or the embedded defaults when ``path`` is None."""
    if path is None:
        return from_dict({}, "defaults")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    return _relative_to(from_dict(data, f"config file {path}"), path.parent)


def _relative_to(cfg: Config, base: Path) -> Config:
    """Relative paths in a config file are relative to its folder, not to where the
    command runs (feed sources that are URLs stay as they are)."""
    for feed in cfg.intel.feeds:
        if "://" not in feed.source and not Path(feed.source).is_absolute():
            feed.source = str(base / feed.source)
    cfg.context.geoip = [p if p.is_absolute() else base / p for p in cfg.context.geoip]
    cfg.collect.dns_logs = [p if p.is_absolute() else base / p for p in cfg.collect.dns_logs]
    return cfg


def effective(cfg: Config) -> dict[str, Any]:
    """The full effective configuration, detector defaults included, ready to print as TOML."""
    from flowhawk.detectors import DETECTORS

    data = cfg.model_dump(mode="json", exclude_none=True)
    for key in _DURATION_KEYS:
        for name, value in data[key].items():
            if isinstance(value, float) and name in _DURATION_KEYS[key]:
                data[key][name] = format_duration(value)
    intel = data["intel"]
    for options in [*intel["feeds"], *intel["options"].values()]:
        for name in ("max_age", "half_life"):
            if isinstance(options.get(name), float):
                options[name] = format_duration(options[name])
    for output in data["outputs"]:  # secrets are never printed
        for key in ("secret", "password"):
            if output.get(key):
                output[key] = "********"
    data["detectors"] = {
        name: {
            **cls.Settings().model_dump(mode="json", exclude_none=True),
            **cfg.detectors.get(name, {}),
        }
        for name, cls in DETECTORS
    }
    return data


_DURATION_KEYS = {
    "learning": {"period"},
    "events": {"window", "host_half_life"},
    "context": {"hops_window", "relay_delay"},
    "pcap": {"active_timeout", "idle_timeout", "tcp_idle_timeout", "tcp_close_timeout"},
    "normalize": {"stitch_gap"},
    "collect": {"batch_interval", "rollover", "checkpoint"},
    "behavior": {"bucket", "lateness", "retention"},
    "serve": {"session_ttl", "events_retention"},
    "intel": {"half_life", "max_age", "fetch_timeout", "refresh"},
}
