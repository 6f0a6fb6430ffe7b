"""Country, city and autonomous system of addresses, from MaxMind-format (.mmdb) databases.

Users bring their own databases: MaxMind GeoLite2/GeoIP2 City, Country and ASN, the
DB-IP lite databases (same record layout as MaxMind) and IPinfo lite (flat records:
``country_code``, ``country``, ``asn`` as ``"AS13335"``, ``as_name``). Several files
can be opened together, typically a City database and an ASN database; each field of
a result comes from the first database, in the order given, that has it, so a later
file only fills what the earlier ones left empty. ``scripts/fetch-geoip.sh`` fetches
freely licensed ones (DB-IP lite country/city, GeoLite2 ASN) into a cache folder.

Every output field is read through :data:`FIELDS`, a table of the places the known
layouts keep it, tried in order; a place that is missing or holds a value of the
wrong type is skipped. MaxMind's ``country`` (where the address is) is read before
its ``registered_country`` (who holds the block), which answers only when ``country``
is absent, as it is for many anycast and cloud networks.

A batch of flows repeats a few thousand addresses a million times, so each distinct
string is parsed and looked up once and the answers are joined back onto the rows.
Parsing is strict (:mod:`ipaddress`, no ``127.1`` shorthand); IPv4-mapped IPv6 is
looked up as IPv4, which the reader finds in databases that keep IPv4 inside their
IPv6 tree. Anything that is not an address, or that no database knows, gives nulls.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import maxminddb
import polars as pl

from flowhawk.errors import InputError

SCHEMA: dict[str, pl.DataType] = {
    "country": pl.String(),
    "country_name": pl.String(),
    "city": pl.String(),
    "latitude": pl.Float64(),
    "longitude": pl.Float64(),
    "asn": pl.Int64(),
    "as_org": pl.String(),
}

_ASN_TEXT = re.compile(r"(?:AS)?(\d{1,10})", re.IGNORECASE)
_PLACE = ("country", "registered_country")  # one step: the first of these keys present


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok else None


def _asn(value: Any) -> int | None:
    if isinstance(value, str) and (match := _ASN_TEXT.fullmatch(value.strip())):
        value = int(match.group(1))
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**32
    return value if ok else None


#: Output field -> (converter, places to read it from in a record, in order). A place
#: is a path of keys; a tuple inside a path takes the first of its keys that exists.
FIELDS: dict[str, tuple[Callable[[Any], Any], tuple[tuple[Any, ...], ...]]] = {
    "country": (_text, ((_PLACE, "iso_code"), ("country_code",))),
    "country_name": (_text, ((_PLACE, "names", "en"), ("country",))),
    "city": (_text, (("city", "names", "en"), ("city",))),
    "latitude": (_number, (("location", "latitude"), ("latitude",))),
    "longitude": (_number, (("location", "longitude"), ("longitude",))),
    "asn": (_asn, (("autonomous_system_number",), ("asn",))),
    "as_org": (_text, (("autonomous_system_organization",), ("as_name",))),
}
_TABLE = tuple(FIELDS.values())


def _follow(record: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        if type(record) is not dict:
            return None
        if type(step) is tuple:
            for key in step:
                if key in record:
                    step = key
                    break
        record = record.get(step)
    return record


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class GeoIPDatabase:
    """One opened file, as its metadata describes it (events cite it as the source)."""

    path: Path
    database_type: str
    build_time: datetime
    ip_version: int

    @property
    def version(self) -> str:
        """``"GeoLite2-City 2024-05-03"``: the type and build date, for reasons and logs."""
        return f"{self.database_type} {self.build_time:%Y-%m-%d}"


def _open(path: Path) -> tuple[Any, GeoIPDatabase]:
    if not path.exists():
        raise InputError(str(path), "GeoIP database not found")
    if path.is_dir():
        raise InputError(str(path), "is a directory, expected a MaxMind-format .mmdb file")
    try:
        reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except OSError as e:
        raise InputError(str(path), f"cannot read GeoIP database: {e.strerror or e}") from e
    except (maxminddb.InvalidDatabaseError, ValueError) as e:
        raise InputError(str(path), "not a MaxMind-format .mmdb database (corrupt?)") from e
    try:
        meta = reader.metadata()
        build_time = datetime.fromtimestamp(int(meta.build_epoch), UTC)
        info = GeoIPDatabase(path, str(meta.database_type), build_time, int(meta.ip_version))
    except (AttributeError, TypeError, ValueError, OverflowError, OSError) as e:
        reader.close()
        raise InputError(str(path), f"unusable .mmdb metadata: {e}") from e
    return reader, info


class GeoIP:
    """Readers of one or more .mmdb files, looked up together (earlier files first)."""

    def __init__(self, readers: Sequence[Any], databases: Sequence[GeoIPDatabase]):
        self._readers = list(readers)
        self.databases: tuple[GeoIPDatabase, ...] = tuple(databases)
        self._closed = False

    @classmethod
    def open(cls, paths: Sequence[Path | str]) -> GeoIP:
        """Open every file (memory-mapped); raise :class:`InputError` naming a bad one."""
        readers: list[Any] = []
        databases: list[GeoIPDatabase] = []
        try:
            for path in paths:
                reader, info = _open(Path(path))
                readers.append(reader)
                databases.append(info)
        except BaseException:
            for reader in readers:
                reader.close()
            raise
        return cls(readers, databases)

    def lookup(self, ips: pl.Series) -> pl.DataFrame:
        """One row per address, in order, with the :data:`SCHEMA` columns (null: unknown)."""
        if self._closed:
            raise ValueError("lookup on closed GeoIP databases")
        keys = pl.DataFrame({"ip": ips.cast(pl.String)})
        distinct = keys.get_column("ip").drop_nulls().unique().to_list()
        rows = [self._lookup_one(text) for text in distinct]
        table = pl.DataFrame(
            [[text, *row] for text, row in zip(distinct, rows, strict=True)],
            schema={"ip": pl.String(), **SCHEMA},
            orient="row",
        )
        joined = keys.join(table, on="ip", how="left", maintain_order="left")
        return joined.select(list(SCHEMA))

    def _lookup_one(self, text: str) -> list[Any]:
        values: list[Any] = [None] * len(FIELDS)
        ip = _address(text)
        if ip is None:
            return values
        for reader in self._readers:
            try:
                record = reader.get(ip)
            except (ValueError, LookupError, maxminddb.InvalidDatabaseError):
                continue  # IPv6 in an IPv4-only file, or a damaged file
            if record is None:
                continue
            for i, (convert, places) in enumerate(_TABLE):
                for place in places if values[i] is None else ():
                    values[i] = convert(_follow(record, place))
                    if values[i] is not None:
                        break
            if None not in values:
                break
        return values

    def close(self) -> None:
        """Release the memory maps; later lookups raise :class:`ValueError`."""
        for reader in self._readers:
            reader.close()
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
