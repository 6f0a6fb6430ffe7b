"""Following Zeek dns.logs while collecting, as ``tail -F`` follows a file.

The collector polls a :class:`DnsFollower` at every rollover; each configured path
(``[collect] dns_logs``) is read from where the previous poll stopped, and the new
*complete* lines become a DNS table (:data:`~flowhawk.dns.schema.DNS_SCHEMA`) parsed by
the batch readers' own code (:mod:`flowhawk.dns.zeek`). A last line still being
written (no newline yet) is left for the next poll.

What the file under a path is, is decided by its identity (device and inode), a
fingerprint of its first bytes (a new file may reuse a deleted one's inode) and its
size:

* replaced (rotation: the path names another file): the rest of the old file, which
  stays open, is read to its end first (a last line without a newline included),
  then the new file from its start;
* truncated (smaller than what was read): read again from the start;
* missing: waited for (logged once), never an error; a file opened before it went
  missing is read to its end.

Each file's format is sniffed from its first bytes (``#``: TSV, ``{``: JSON lines).
For TSV the header in force (:class:`~flowhawk.dns.zeek.TsvState`) is kept between
polls, since a block of appended lines carries none. Bad lines are counted in the
collector's :class:`~flowhawk.diagnostics.Diagnostics` (and :attr:`DnsFollower.totals`),
never raised; a file that is not a dns.log at all is reported once and its lines
counted as bad until it is replaced.

:meth:`DnsFollower.state` (path, device, inode, offset, line, format, TSV header
state, fingerprint) is saved as ``DATA/collector/dns_follow.json``; a follower loaded
from it continues where the saved state stopped: a file still the same is read on
from its offset, one replaced or truncated meanwhile from its start. A path followed
for the first time is read from its start. One poll reads at most ``max_bytes`` per
file; a longer backlog is read over the following polls.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from flowhawk.diagnostics import Diagnostics
from flowhawk.dns.zeek import TsvState, is_dns_json, parse_json
from flowhawk.errors import InputError, StateError
from flowhawk.sources import jsonlines

log = logging.getLogger("flowhawk.collect")

#: Bytes read from one file in one poll at most.
MAX_BYTES = 64 * 1024 * 1024
#: Bytes at the start of a file whose hash tells a new file from the one read before.
HEAD_BYTES = 1024
STATE_VERSION = 1


def state_path(data_dir: Path) -> Path:
    """Where a collector keeps the followed files' positions."""
    return data_dir / "collector" / "dns_follow.json"


@dataclass
class FollowTotals:
    """What a follower read since it was created."""

    read: int = 0  # DNS transactions parsed
    bad: int = 0  # lines skipped as bad (including lines of files that are no dns.log)
    ignored: int = 0  # records of other Zeek logs, deliberately not used
    rotations: int = 0  # files replaced under their path
    truncations: int = 0


class _Followed:
    """One followed path: the file read under it and how far."""

    def __init__(self, path: Path, diag: Diagnostics):
        self.path = path
        self.name = str(path)
        self.diag = diag
        self.fd: int | None = None
        self.waiting = False  # logged as missing
        self.reset(None, None)

    def reset(self, device: int | None, inode: int | None) -> None:
        """Start over on the file ``device``/``inode`` (its first byte, line 1)."""
        self.device, self.inode = device, inode
        self.offset = 0
        self.line = 1  # of the next byte to read
        self.format: str | None = None  # "tsv" or "json" once sniffed
        self.ts_text: bool | None = None  # JSON: ts as ISO 8601 text
        self.records = 0  # JSON records so far
        self.tsv: TsvState | None = None
        self.head_len = 0
        self.head_hash = ""
        self.unusable: str | None = None  # why the file is not read as a dns.log
        self.skip_line = False  # inside an overlong line: drop up to its newline

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "inode": self.inode,
            "offset": self.offset,
            "line": self.line,
            "format": self.format,
            "ts_text": self.ts_text,
            "records": self.records,
            "tsv": None if self.tsv is None else self.tsv.to_json(),
            "head_len": self.head_len,
            "head_sha256": self.head_hash,
            "unusable": self.unusable,
            "skip_line": self.skip_line,
        }

    def from_json(self, doc: dict[str, Any]) -> None:
        self.reset(doc["device"], doc["inode"])
        self.offset, self.line = int(doc["offset"]), int(doc["line"])
        self.format, self.ts_text = doc["format"], doc["ts_text"]
        self.records = int(doc["records"])
        tsv = doc["tsv"]
        self.tsv = None if tsv is None else TsvState.from_json(self.name, self.diag, tsv)
        self.head_len, self.head_hash = int(doc["head_len"]), str(doc["head_sha256"])
        self.unusable, self.skip_line = doc["unusable"], bool(doc["skip_line"])
        if self.format not in (None, "tsv", "json") or self.offset < 0 or self.line < 1:
            raise ValueError(f"format {self.format!r}, offset {self.offset}, line {self.line}")


class DnsFollower:
    """Follows Zeek dns.logs; :meth:`poll` returns the transactions of new lines."""

    def __init__(
        self, paths: Sequence[Path], diag: Diagnostics | None = None, max_bytes: int = MAX_BYTES
    ):
        self.diag = diag if diag is not None else Diagnostics()
        self.max_bytes = max_bytes
        self.totals = FollowTotals()
        self.files: dict[str, _Followed] = {}
        for path in paths:
            f = _Followed(Path(os.path.abspath(path)), self.diag)
            self.files.setdefault(f.name, f)

    @classmethod
    def open(
        cls, paths: Sequence[Path], data_dir: Path, diag: Diagnostics | None = None
    ) -> DnsFollower:
        """A follower of ``paths`` continuing from the state saved in ``data_dir``."""
        follower = cls(paths, diag)
        path = state_path(data_dir)
        if path.exists():
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise StateError(
                    f"{path} is unreadable ({exc}); move it away to read the dns.logs afresh"
                ) from None
            follower.load(doc, str(path))
        return follower

    def save(self, data_dir: Path) -> None:
        """Write :meth:`state` to ``DATA/collector/dns_follow.json`` atomically."""
        path = state_path(data_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w") as fh:
            json.dump(self.state(), fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def state(self) -> dict[str, Any]:
        """Every followed file's position and parsing state, JSON-serializable."""
        return {
            "version": STATE_VERSION,
            "saved": datetime.now(UTC).isoformat(),
            "files": {name: f.to_json() for name, f in sorted(self.files.items())},
        }

    def load(self, state: dict[str, Any], origin: str = "DNS follow state") -> None:
        """Continue from :meth:`state` (paths no longer followed are dropped)."""
        try:
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"version {state.get('version')!r}, expected {STATE_VERSION}")
            for name, doc in state["files"].items():
                if name in self.files:
                    self.files[name].from_json(doc)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(
                f"{origin} is not a valid DNS follow state ({exc!r}); move it away to read "
                "the dns.logs from their start"
            ) from None

    def close(self) -> None:
        """Close the open files (a later :meth:`poll` opens them again)."""
        for f in self.files.values():
            self._close(f)

    # -- polling -------------------------------------------------------------------------

    def poll(self) -> pa.Table | None:
        """DNS transactions of the lines completed since the last poll (None: nothing)."""
        tables: list[pa.Table] = []
        for f in self.files.values():
            try:
                tables.extend(self._poll(f))
            except OSError as exc:  # an unreadable file is retried at the next poll
                if not f.waiting:
                    log.warning("cannot read the dns.log %s: %s", f.name, exc)
                f.waiting = True
                self._close(f)
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return None
        table = pa.concat_tables(tables)
        self.totals.read += table.num_rows
        return table

    def _poll(self, f: _Followed) -> list[pa.Table]:
        out: list[pa.Table] = []
        try:
            st: os.stat_result | None = os.stat(f.path)
        except FileNotFoundError:
            st = None
        if f.fd is not None:
            opened = os.fstat(f.fd)
            if st is None or (st.st_dev, st.st_ino) != (opened.st_dev, opened.st_ino):
                # Replaced or gone: what the old file still holds comes first.
                if st is None and opened.st_nlink > 0:
                    out.extend(self._read(f, final=False))  # renamed: may still grow
                else:
                    out.extend(self._read(f, final=True))
                    self._close(f)
                    if st is not None:
                        self.totals.rotations += 1
                        log.info("%s was replaced: reading the new file from its start", f.name)
                        f.reset(None, None)
        if st is None:
            if not f.waiting:
                log.warning("waiting for the dns.log %s to appear", f.name)
                f.waiting = True
            return out
        if f.waiting:
            log.info("following the dns.log %s", f.name)
            f.waiting = False
        if f.fd is None:
            f.fd = os.open(f.path, os.O_RDONLY)
            opened = os.fstat(f.fd)
            if (opened.st_dev, opened.st_ino) != (f.device, f.inode) or not self._same_head(f):
                if f.inode is not None:
                    log.info("%s is a new file since it was last read: reading it all", f.name)
                f.reset(opened.st_dev, opened.st_ino)
        if os.fstat(f.fd).st_size < f.offset or not self._same_head(f):
            self.totals.truncations += 1
            log.info("%s was truncated or rewritten: reading it from its start", f.name)
            f.reset(f.device, f.inode)
        out.extend(self._read(f, final=False))
        return out

    def _same_head(self, f: _Followed) -> bool:
        """Whether the file's first bytes are still those read before."""
        if f.fd is None or not f.head_len:
            return True
        head = os.pread(f.fd, f.head_len, 0)
        return hashlib.sha256(head).hexdigest() == f.head_hash

    def _close(self, f: _Followed) -> None:
        if f.fd is not None:
            os.close(f.fd)
            f.fd = None

    def _read(self, f: _Followed, final: bool) -> list[pa.Table]:
        """Parse the complete lines after the offset (``final``: the file ends there, so a
        last line without a newline counts, and everything is read)."""
        assert f.fd is not None
        out: list[pa.Table] = []
        while True:
            size = os.fstat(f.fd).st_size
            if size <= f.offset:
                return out
            data = os.pread(f.fd, min(size - f.offset, self.max_bytes), f.offset)
            if not data:
                return out
            at_end = f.offset + len(data) >= size
            cut = data.rfind(b"\n") + 1
            if final and at_end and cut < len(data):
                block, used = data + b"\n", len(data)
            elif cut:
                block, used = data[:cut], cut
            elif len(data) >= self.max_bytes:  # a line longer than a whole read
                self._skip_long_line(f, len(data))
                continue
            else:
                return out  # the last line is still being written
            start = 0
            if f.skip_line:  # the end of an overlong line: not a record
                start, f.skip_line = block.index(b"\n") + 1, False
            table = None
            if start < len(block):
                table = self._parse(f, block[start:], f.line + (start > 0))
            f.offset += used
            f.line += block.count(b"\n")
            if f.head_len < HEAD_BYTES and f.offset > f.head_len:
                head = os.pread(f.fd, min(HEAD_BYTES, f.offset), 0)
                f.head_len, f.head_hash = len(head), hashlib.sha256(head).hexdigest()
            if table is not None:
                out.append(table)
            if not final:
                return out

    def _skip_long_line(self, f: _Followed, nbytes: int) -> None:
        if not f.skip_line:
            detail = f"longer than {self.max_bytes} bytes"
            self.diag.skip(f.name, f"line {f.line}", "line too long", detail)
            self.totals.bad += 1
        f.skip_line = True
        f.offset += nbytes

    def _parse(self, f: _Followed, block: bytes, line: int) -> pa.Table | None:
        """DNS rows of whole lines, the first being ``line``; counts bad and ignored ones."""
        if f.format is None and not self._sniff(f, block):
            return None
        if f.unusable is not None:
            self._bad_lines(f, block, line, f.unusable)
            return None
        stats = self.diag.stats(f.name)
        bad, ignored = stats.skipped_total, sum(stats.ignored.values())
        try:
            if f.format == "tsv":
                if f.tsv is None:
                    f.tsv = TsvState(f.name, self.diag)
                table = f.tsv.lines(block, line)
            else:
                table, n = parse_json(block, line, f.records, f.name, self.diag, f.ts_text)
                f.records += n
        except InputError as exc:
            f.unusable = exc.message
            log.warning("%s is not read: %s", f.name, exc.message)
            self._bad_lines(f, block, line, exc.message)
            return None
        self.totals.bad += stats.skipped_total - bad
        self.totals.ignored += sum(stats.ignored.values()) - ignored
        return table if table is not None and table.num_rows else None

    def _sniff(self, f: _Followed, block: bytes) -> bool:
        """Decide the format from the file's first lines; False while they are blank."""
        text = block.lstrip(b" \t\r\n")
        if not text:
            return False
        if text.startswith(b"#"):
            f.format = "tsv"
        elif text.startswith(b"{"):
            f.format = "json"
            first = jsonlines.first_object(block)
            if is_dns_json(first):
                assert first is not None
                f.ts_text = isinstance(first.get("ts"), str)
            else:
                f.unusable = (
                    "not a Zeek dns log in JSON: the first line lacks ts, id.orig_h or query"
                )
        else:
            f.format = "tsv"
            f.unusable = "neither a Zeek TSV log ('#' header) nor JSON lines"
        if f.unusable is not None:
            log.warning("%s is not read: %s", f.name, f.unusable)
        return True

    def _bad_lines(self, f: _Followed, block: bytes, line: int, why: str) -> None:
        n = sum(1 for text in block.split(b"\n") if text.strip() and not text.startswith(b"#"))
        self.diag.skip(f.name, f"line {line}", "not a dns.log", why, count=n)
        self.totals.bad += n
