"""Reading feeds: files, folders and http(s) URLs, each parsed into a :class:`Feed`.

* A file is read whole (gzip, bzip2 and xz are decompressed, recognized by their
  magic bytes), its format detected from content unless the options name one.
* A folder is walked recursively in name order; every file in it is a feed.
  Hidden files and documentation beside feeds (``README*``, ``LICENSE*``,
  ``SOURCE*``, ``*.md``...) are passed over, and a file in a folder whose format is
  unknown or that cannot be read is reported in the diagnostics and passed over,
  where a file named directly raises :class:`~flowhawk.errors.InputError`.
* A URL is downloaded with the standard library's HTTP client (no extra
  dependency; redirects followed, a timeout and a size limit from the settings) and
  its bytes take exactly the path a file's take.

Names: a feed is called by its file stem (``abuse-ch-ipblocklist``), a maltrail
trail by ``folder/stem`` (``malware/emotet``), a download by the stem of its URL's
last path segment, unless the settings name it (a named folder prefixes its
files' names: ``maltrail/malware/emotet``). A name met twice gets ``~2``, ``~3``.

Versions: a feed's version is a hash of its (decompressed) content, so the same
bytes give the same version wherever they came from and whenever they were read;
its load time is kept beside it.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import lzma
import re
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import polars as pl

from flowhawk import __version__
from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.intel import formats
from flowhawk.intel.formats.base import Entries, ParseContext, finish
from flowhawk.intel.formats.lines import C2_FRAMEWORKS
from flowhawk.intel.schema import category_from_text
from flowhawk.intel.settings import FeedOptions, FeedSettings, IntelSettings

log = logging.getLogger("flowhawk.intel")

_DOCS = re.compile(
    r"^(readme|licen[cs]e|copying|source|changelog|notice|authors)([._-].*)?$"
    r"|\.(md|rst|html?|pdf|sha256|md5|sig|asc)$",
    re.IGNORECASE,
)
_COMPRESSED = ((b"\x1f\x8b", gzip.decompress), (b"BZh", bz2.decompress),
               (b"\xfd7zXZ\x00", lzma.decompress))  # fmt: skip
_COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz")
#: Entries classified together: many small feeds share the fixed cost of one pass.
BATCH_ENTRIES = 2_000_000


@dataclass(frozen=True)
class Feed:
    """One feed as read: where from, its version and its indicators."""

    name: str
    origin: str  # the path or URL
    format: str
    version: str  # hash of the content
    loaded_at: datetime
    options: FeedOptions  # resolved: weight, half-life, max age
    category: str  # for entries that carry none
    indicators: pl.DataFrame


def content_version(data: bytes) -> str:
    """The version of a feed's content: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(data).hexdigest()[:16]


def is_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def _decompress(data: bytes, origin: str) -> bytes:
    for magic, decompress in _COMPRESSED:
        if data.startswith(magic):
            try:
                return decompress(data)
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
                raise InputError(origin, f"damaged compressed data ({exc})") from None
    return data


def fetch(url: str, settings: IntelSettings) -> bytes:
    """The body of ``url``; :class:`InputError` on any failure, naming the URL."""
    request = urllib.request.Request(url, headers={"User-Agent": f"flowhawk/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=settings.fetch_timeout) as response:
            body: bytes = response.read(settings.max_download_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise InputError(url, f"cannot be fetched: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(url, f"cannot be fetched: {reason}") from None
    if len(body) > settings.max_download_bytes:
        raise InputError(url, f"is larger than max_download_bytes ({settings.max_download_bytes})")
    return body


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(str(path), "does not exist") from None
    except OSError as exc:
        raise InputError(str(path), f"cannot be read: {exc.strerror or exc}") from None


def _stem(name: str) -> str:
    for suffix in _COMPRESSED_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return PurePosixPath(name).stem or name


def _url_parts(url: str) -> tuple[str, ...]:
    split = urllib.parse.urlsplit(url)
    parts = [urllib.parse.unquote(p) for p in split.path.split("/") if p]
    return tuple(parts) or (split.hostname or "feed",)


def _guess_category(name: str) -> str:
    """A feed's category from its name when the settings give none (``tor-exit`` ->
    tor, ``cobaltstrike_ips`` -> c2); a list of unknown kind is ``malicious``."""
    guessed = category_from_text(name)
    if guessed in (None, "benign", "malicious"):
        words = set(re.split(r"[^a-z0-9]+", name.lower()))
        if words & C2_FRAMEWORKS or any(w.endswith("c2") for w in words):
            return "c2"
    return guessed if guessed not in (None, "benign") else "malicious"


@dataclass
class _Pending:
    """A feed parsed into entries, waiting for the batch that classifies them."""

    name: str
    origin: str
    format: str
    version: str
    loaded_at: datetime
    options: FeedOptions
    category: str
    context: ParseContext
    entries: Entries


class _Loader:
    def __init__(self, settings: IntelSettings, diagnostics: Diagnostics, now: datetime | None):
        self.settings = settings
        self.diag = diagnostics
        self.now = now
        self.names: dict[str, int] = {}
        self.pending: list[_Pending] = []
        self.feeds: list[Feed] = []
        self.queued = 0

    def add(self, source: str | Path | FeedSettings) -> None:
        own = source if isinstance(source, FeedSettings) else None
        where = own.source if own is not None else source
        if is_url(where):
            self._one(fetch(str(where), self.settings), str(where), _url_parts(str(where)), own)
            return
        path = Path(where)
        if not path.is_dir():
            self._one(_read(path), str(path), path.parts, own)
            return
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = file.relative_to(path)
            if any(part.startswith(".") for part in rel.parts) or _DOCS.search(file.name):
                continue
            try:
                self._one(_read(file), str(file), file.parts, own, in_folder=True)
            except InputError as exc:
                self.diag.fail(str(file), exc.message)

    def _one(
        self,
        raw: bytes,
        origin: str,
        parts: tuple[str, ...],
        own: FeedSettings | None,
        in_folder: bool = False,
    ) -> None:
        loaded_at = self.now or datetime.now(UTC)
        data = _decompress(raw, origin)
        stem = _stem(parts[-1])
        named = own.name if own is not None and own.name and not in_folder else None
        fmt = self.settings.options_for(named or stem, own).format
        fmt = fmt or formats.detect(data, origin)
        base = f"{parts[-2]}/{stem}" if fmt == "maltrail" and len(parts) > 1 else stem
        if own is not None and own.name:
            base = f"{own.name}/{base}" if in_folder else own.name
        options = self.settings.options_for(base, own)
        ctx = ParseContext(
            origin, self.diag, now=loaded_at, options={"csv": options.csv}, path_parts=parts
        )
        found = formats.parse(data, fmt, ctx)
        name = self._unique(base)
        category = options.category or _guess_category(name)
        self.pending.append(
            _Pending(
                name, origin, fmt, content_version(data), loaded_at, options, category, ctx, found
            )
        )
        self.queued += found.frame.height
        if self.queued >= BATCH_ENTRIES:
            self.flush()

    def flush(self) -> None:
        """Classify the pending feeds' entries in one pass and make them feeds."""
        tables = finish([(p.context, p.entries) for p in self.pending])
        for p, indicators in zip(self.pending, tables, strict=True):
            stats = self.diag.stats(p.origin)
            stats.format = f"intel-{p.format}"
            stats.records += indicators.height
            self.feeds.append(
                Feed(
                    p.name,
                    p.origin,
                    p.format,
                    p.version,
                    p.loaded_at,
                    p.options,
                    p.category,
                    indicators,
                )
            )
        self.pending, self.queued = [], 0

    def _unique(self, name: str) -> str:
        seen = self.names.get(name, 0) + 1
        self.names[name] = seen
        if seen == 1:
            return name
        log.warning("two feeds are called %r: the later one is %r", name, f"{name}~{seen}")
        return f"{name}~{seen}"


def load_feeds(
    sources: Iterable[str | Path | FeedSettings],
    settings: IntelSettings | None = None,
    *,
    diagnostics: Diagnostics | None = None,
    now: datetime | None = None,
) -> list[Feed]:
    """Read every source (file, folder or URL) into feeds, in the order given.

    ``now`` fixes the load time (default: the clock at each read).
    """
    loader = _Loader(settings or IntelSettings(), diagnostics or Diagnostics(), now)
    for source in sources:
        loader.add(source)
    loader.flush()
    return loader.feeds
