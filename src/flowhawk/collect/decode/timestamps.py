"""Flow start/end times, as µs since the Unix epoch (UTC), from whatever an exporter sends.

Precedence, per template (the first kind present wins, for start and end separately):

1. absolute times: IPFIX dateTimeMicroseconds/Nanoseconds (154-157, NTP format),
   milliseconds (152/153), seconds (150/151);
2. flowStart/EndDeltaMicroseconds (158/159): microseconds before the export time;
3. sysUpTime-relative first/last (22/21): NetFlow v5/v9 convert them with the
   header's export time and uptime; IPFIX with systemInitTimeMilliseconds (160, from
   options or the record), and when that is unknown the flow is taken to end at the
   export time, keeping its duration;
4. a missing end is the start plus flowDuration (161/162), or the ASA event time
   (323), or the start; a missing start is the end; neither: the export time.
"""

from __future__ import annotations

import numpy as np

# Seconds from the NTP era 0 epoch (1900-01-01) to the Unix epoch.
NTP_UNIX_OFFSET = 2_208_988_800
_U32 = np.int64(1 << 32)
_HALF = np.int64(1 << 31)


def ntp_us(v: np.ndarray) -> np.ndarray:
    """NTP 64-bit timestamps (seconds since 1900 . 2^-32 fraction) as Unix µs.

    Seconds with the top bit clear are taken to be in NTP era 1 (after 2036-02-07),
    as RFC 5905 suggests for timestamps near the present.
    """
    v = v.astype(np.uint64)
    sec = (v >> np.uint64(32)).astype(np.int64)
    sec = np.where(sec < _HALF, sec + _U32, sec) - NTP_UNIX_OFFSET
    frac = ((v & np.uint64(0xFFFF_FFFF)) * np.uint64(1_000_000)) >> np.uint64(32)
    return sec * 1_000_000 + frac.astype(np.int64)


def _signed32(v: np.ndarray) -> np.ndarray:
    # uptime differences are modulo 2^32 ms (~49.7 days); a flow starting just before an
    # uptime wrap, or a first-switched a few ms after the header uptime, stays sane.
    return (v + _HALF) % _U32 - _HALF


def _absolute(raw: dict[str, np.ndarray], side: str) -> np.ndarray | None:
    for suffix, scale in (("us", 0), ("ns", 0), ("ms", 1000), ("s", 1_000_000)):
        v = raw.get(f"{side}_{suffix}")
        if v is not None:
            if scale == 0:
                return ntp_us(v)
            return (v & np.uint64(0x7FFF_FFFF_FFFF_FFFF)).astype(np.int64) * scale
    return None


def _uptime(
    raw: dict[str, np.ndarray],
    export_us: np.ndarray,
    uptime_ms: np.ndarray,
    sys_init_ms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    first = raw.get("first_up")
    last = raw.get("last_up")
    first = last if first is None else first
    last = first if last is None else last
    f = (first & np.uint64(0xFFFF_FFFF)).astype(np.int64)  # type: ignore[operator]
    l_ = (last & np.uint64(0xFFFF_FFFF)).astype(np.int64)  # type: ignore[operator]
    known = uptime_ms >= 0
    init = sys_init_ms >= 0
    duration = _signed32(l_ - f) * 1000
    start = np.where(
        known,
        export_us - _signed32(uptime_ms - f) * 1000,
        np.where(init, (sys_init_ms + f) * 1000, export_us - duration),
    )
    end = np.where(
        known,
        export_us - _signed32(uptime_ms - l_) * 1000,
        np.where(init, (sys_init_ms + l_) * 1000, export_us),
    )
    return start, end


def flow_times(
    raw: dict[str, np.ndarray],
    export_us: np.ndarray,
    uptime_ms: np.ndarray,
    sys_init_ms: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``(start_us, end_us)`` int64 arrays for records with raw columns ``raw``.

    ``uptime_ms`` is the NetFlow header's sysUptime per record (-1 for IPFIX);
    ``sys_init_ms`` the exporter's systemInitTimeMilliseconds (-1 if unknown).
    """
    start = _absolute(raw, "start")
    end = _absolute(raw, "end")
    if start is None and "start_delta_us" in raw:
        start = export_us - raw["start_delta_us"].astype(np.int64)
    if end is None and "end_delta_us" in raw:
        end = export_us - raw["end_delta_us"].astype(np.int64)
    if (start is None or end is None) and ("first_up" in raw or "last_up" in raw):
        if "sys_init_ms" in raw:  # the record's own systemInitTimeMilliseconds wins
            sys_init_ms = raw["sys_init_ms"].astype(np.int64)
        up_start, up_end = _uptime(raw, export_us, uptime_ms, sys_init_ms)
        start = up_start if start is None else start
        end = up_end if end is None else end
    if end is None and start is not None:
        if "dur_ms" in raw:
            end = start + raw["dur_ms"].astype(np.int64) * 1000
        elif "dur_us" in raw:
            end = start + raw["dur_us"].astype(np.int64)
    if end is None and "obs_ms" in raw:
        end = (raw["obs_ms"] & np.uint64(0x7FFF_FFFF_FFFF_FFFF)).astype(np.int64) * 1000
    if start is None and end is None:
        return export_us.copy(), export_us.copy()
    if start is None:
        start = end
    if end is None:
        end = start
    return start, end  # type: ignore[return-value]
