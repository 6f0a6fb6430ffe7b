"""Export sequence numbers: how much an exporter sent that never arrived.

- NetFlow v5 counts flow records: the header holds the flows sent before it.
- NetFlow v9 (RFC 3954) counts export packets per source id: +1 per datagram.
- IPFIX (RFC 7011 section 3.1) counts data records (options data included) per
  observation domain, sent *before* this message.

Some IPFIX exporters (softflowd 1.1.0 among them) count the current message's
records too, so every message looks like a gap of exactly its own record count.
Such a gap is first held as a *suspect*; when the next message again matches the
other convention (and not ours) the domain is switched to it and the suspect is
dropped; when it matches ours, the suspect is counted after all. The two
conventions cannot be told apart while consecutive messages carry equal record
counts, which is also when the choice does not matter.

A jump backwards (more than 2^31 behind) is a restart or reordering: the tracker
resynchronizes without counting anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowhawk.collect.decode.base import DomainStats

_M = 1 << 32
_HALF = 1 << 31


def _gap(stats: DomainStats, lost: int) -> None:
    if 0 < lost < _HALF:
        stats.sequence_gaps += 1
        stats.lost += lost


def observe(
    stats: DomainStats,
    memo: dict[str, Any],
    seq: int,
    n: int | None,
    per_packet: bool,
    detect_inclusive: bool = False,
) -> None:
    """Account for a datagram with header sequence ``seq`` and ``n`` records (None: unknown).

    ``memo`` is the domain's JSON-able scratch dict; ``per_packet`` selects NetFlow v9
    counting; ``detect_inclusive`` enables the IPFIX convention detection above.
    """
    prev = memo.get("seq")
    if per_packet:
        if prev is not None:
            _gap(stats, (seq - prev[0] - 1) % _M)
        memo["seq"] = [seq, n, 0, 0, 0]
        stats.next_sequence = (seq + 1) % _M
        return
    if prev is None or prev[1] is None:
        inclusive = bool(prev[2]) if prev else False
        memo["seq"] = [seq, n, int(inclusive), 0, 0]
        _set_next(stats, seq, n, inclusive)
        return
    last, last_n, inclusive, votes, suspect = prev
    delta = (seq - last) % _M
    standard_ok = delta == last_n
    inclusive_ok = detect_inclusive and n is not None and delta == n
    ok, other = (inclusive_ok, standard_ok) if inclusive else (standard_ok, inclusive_ok)
    expected_step = (n or 0) if inclusive else last_n
    if ok:
        if not other:
            _gap(stats, suspect)
            suspect = votes = 0
    elif other:
        votes += 1
        if votes >= 2:  # consistently the other convention: adopt it, forget the suspect
            inclusive = not inclusive
            suspect = votes = 0
        else:
            suspect = (delta - expected_step) % _M
    else:
        _gap(stats, suspect)
        suspect = votes = 0
        _gap(stats, (delta - expected_step) % _M)
    memo["seq"] = [seq, n, int(inclusive), votes, suspect]
    _set_next(stats, seq, n, bool(inclusive))


def _set_next(stats: DomainStats, seq: int, n: int | None, inclusive: bool) -> None:
    if inclusive:
        stats.next_sequence = seq  # the next header will be seq + its own records
    else:
        stats.next_sequence = None if n is None else (seq + n) % _M


def observe_records(
    stats: DomainStats, memo: dict[str, Any], seqs: np.ndarray, counts: np.ndarray
) -> None:
    """NetFlow v5: a batch of one domain's datagrams at once (standard convention only)."""
    prev = memo.get("seq")
    seqs = seqs.astype(np.int64)
    counts = counts.astype(np.int64)
    expected = (np.roll(seqs, 1) + np.roll(counts, 1)) % _M
    known = np.ones(len(seqs), dtype=bool)
    if prev is None or prev[1] is None:
        known[0] = False
    else:
        expected[0] = (prev[0] + prev[1]) % _M
    lost = (seqs - expected) % _M
    gaps = known & (lost > 0) & (lost < _HALF)
    stats.sequence_gaps += int(gaps.sum())
    stats.lost += int(lost[gaps].sum())
    memo["seq"] = [int(seqs[-1]), int(counts[-1]), 0, 0, 0]
    stats.next_sequence = int((seqs[-1] + counts[-1]) % _M)
