"""Speed and fuzz run of the NetFlow v5 / v9 and IPFIX decoders (flowhawk.collect.decode).

1. Speed: realistic export datagrams decoded from memory on one core, in batches of
   ``--batch`` datagrams (default 64; also 256 and 1024), after a warm-up: NetFlow v5
   (30 records a datagram), NetFlow v9 (Cisco-like 48-byte IPv4 records, 29 a
   datagram, template refreshed every 20 datagrams) and IPFIX (46-byte records with
   millisecond times, 30 a message, 1 in 10 messages IPv6 plus an RFC 5103 biflow
   template). Prints records/s to a finished Arrow table and, for reference, the rate
   without the last step that makes that table (strings: addresses, MACs, flow ids).
2. Fuzz: >= ``--datagrams`` (default 1,000,000) datagrams mutated from the 92 real
   corpus packets (each scenario replayed with its template files, so templates are
   primed and mutated templates meet real data): bit flips, 16/32-bit fields set to
   boundary values, set ids / lengths / template ids overwritten, cuts, inserted and
   deleted spans. Each batch starts from the scenario's primed state. An exception, a
   reason outside the known list, or a state that is no longer JSON fails the run (the
   batch is saved to /tmp/flowhawk-flow-fuzz-failure.bin). Every ``--check-every``
   batch is also decoded one datagram at a time and must give the same table.
   Prints counts by reason and datagrams/s.

Run:  .venv/bin/python bench/fuzz_decoders.py [--datagrams 1000000] [--skip-speed]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

U16 = np.array([0, 1, 2, 3, 4, 5, 8, 16, 20, 255, 256, 257, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF])
U32 = np.array([0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF, 29305], dtype=np.uint64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datagrams", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check-every", type=int, default=50)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-fuzz", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    if not args.skip_speed:
        speed(args.batch)
    return 0 if args.skip_fuzz else fuzz(args)


# -- speed ---------------------------------------------------------------------------------


def _pools(rng: np.random.Generator) -> tuple[list[str], list[str]]:
    inside = [
        f"10.{rng.integers(0, 64)}.{rng.integers(0, 256)}.{rng.integers(1, 255)}"
        for _ in range(2000)
    ]
    outside = [".".join(str(x) for x in rng.integers(1, 224, 4)) for _ in range(8000)]
    return inside, outside


def v5_datagrams(n: int, rng: np.random.Generator) -> list[bytes]:
    from tests.collect.test_netflow5 import v5_packet, v5_record

    inside, outside = _pools(rng)
    out = []
    for i in range(n):
        recs = [
            v5_record(
                src=inside[rng.integers(len(inside))],
                dst=outside[rng.integers(len(outside))],
                sport=int(rng.integers(1024, 65535)),
                dport=int(rng.choice([443, 80, 53])),
                pkts=int(rng.integers(1, 100)),
                octets=int(rng.integers(40, 100_000)),
            )
            for _ in range(30)
        ]
        out.append(v5_packet(*recs, seq=30 * i))
    return out


def v9_datagrams(n: int, rng: np.random.Generator) -> list[bytes]:
    from tests.collect.test_netflow9 import V4, flowset, v4_record, v9_packet, v9_template

    inside, outside = _pools(rng)
    out = []
    for i in range(n):
        recs = b"".join(
            v4_record(
                src=inside[rng.integers(len(inside))],
                dst=outside[rng.integers(len(outside))],
                sport=int(rng.integers(1024, 65535)),
                pkts=int(rng.integers(1, 100)),
                octets=int(rng.integers(40, 100_000)),
            )
            for _ in range(29)
        )
        sets = [flowset(256, recs)]
        if i % 20 == 0:
            sets.insert(0, flowset(0, v9_template(256, V4)))
        out.append(v9_packet(*sets, seq=i))
    return out


def ipfix_datagrams(n: int, rng: np.random.Generator) -> list[bytes]:
    from tests.collect.test_ipfix import FLOW, flow, ipfix_message, ipfix_template
    from tests.collect.test_netflow9 import flowset, pack

    inside, outside = _pools(rng)
    v6 = [
        (27, 16),
        (28, 16),
        (7, 2),
        (11, 2),
        (4, 1),
        (2, 8),
        (1, 8),
        (2, 8, 29305),
        (1, 8, 29305),
        (152, 8),
        (153, 8),
    ]
    templates = flowset(2, ipfix_template(256, FLOW) + ipfix_template(257, v6))
    out, seq = [], 0
    for i in range(n):
        if i % 10 == 9:
            recs = b"".join(
                pack(
                    v6,
                    [
                        f"2001:db8::{rng.integers(1, 5000):x}",
                        f"2001:db8:1::{rng.integers(1, 5000):x}",
                        40000,
                        443,
                        6,
                        5,
                        900,
                        4,
                        3000,
                        1_700_000_000_000,
                        1_700_000_001_000,
                    ],
                )
                for _ in range(20)
            )
            sets, count = [flowset(257, recs)], 20
        else:
            recs = b"".join(
                flow(
                    src=inside[rng.integers(len(inside))],
                    dst=outside[rng.integers(len(outside))],
                    sport=int(rng.integers(1024, 65535)),
                    octets=int(rng.integers(40, 10**6)),
                )
                for _ in range(30)
            )
            sets, count = [flowset(256, recs)], 30
        if i % 20 == 0:
            sets.insert(0, templates)
        out.append(ipfix_message(*sets, seq=seq))
        seq += count
    return out


def speed(batch: int) -> None:
    from flowhawk.collect.decode import columns
    from flowhawk.collect.decode.base import ExporterState
    from flowhawk.collect.decode.ipfix import IpfixDecoder
    from flowhawk.collect.decode.netflow5 import NetFlow5Decoder
    from flowhawk.collect.decode.netflow9 import NetFlow9Decoder

    rng = np.random.default_rng(7)
    cases = [
        ("netflow5", NetFlow5Decoder, v5_datagrams(4096, rng)),
        ("netflow9", NetFlow9Decoder, v9_datagrams(4096, rng)),
        ("ipfix", IpfixDecoder, ipfix_datagrams(4096, rng)),
    ]
    table_time = [0.0]
    real_table = columns.table

    def timed_table(*a, **k):
        t = time.perf_counter()
        out = real_table(*a, **k)
        table_time[0] += time.perf_counter() - t
        return out

    columns.table = timed_table
    print(f"speed: one core, from memory, {len(cases[0][2])} datagrams per protocol")
    for size in sorted({batch, 256, 1024}):
        for name, cls, dgs in cases:
            decoder, state = cls(), ExporterState("192.0.2.1")
            decoder.decode(dgs[:size], [0] * size, state)  # warm-up (first template)
            best, rows, strings = float("inf"), 0, 0.0
            for _ in range(3):
                state, table_time[0] = ExporterState("192.0.2.1"), 0.0
                t, rows = time.perf_counter(), 0
                for i in range(0, len(dgs), size):
                    rows += decoder.decode(dgs[i : i + size], [0] * size, state).flows.num_rows
                took = time.perf_counter() - t
                if took < best:
                    best, strings = took, table_time[0]
            print(
                f"  {name:9s} batch {size:5d}: {rows / best / 1e6:5.2f} M records/s, "
                f"{len(dgs) / best / 1e3:5.1f} k datagrams/s (without the Arrow table: "
                f"{rows / (best - strings) / 1e6:5.2f} M records/s)"
            )
    columns.table = real_table


# -- fuzz ----------------------------------------------------------------------------------


def mutate(data: bytes, heads: list[int], rng: np.random.Generator) -> bytes:
    b = np.frombuffer(data, dtype=np.uint8).copy()
    for _ in range(int(rng.integers(1, 4))):
        if len(b) == 0:
            break
        op = rng.integers(0, 9)
        pos = int(rng.integers(0, len(b)))
        if op <= 1:  # bit flips are the most common
            b[pos] ^= np.uint8(1 << int(rng.integers(0, 8)))
        elif op == 2:
            b = b[: int(rng.integers(0, len(b)))]
        elif op == 3 and pos + 2 <= len(b):
            b[pos : pos + 2] = np.frombuffer(int(rng.choice(U16)).to_bytes(2, "big"), np.uint8)
        elif op == 4 and pos + 4 <= len(b):
            b[pos : pos + 4] = np.frombuffer(int(rng.choice(U32)).to_bytes(4, "big"), np.uint8)
        elif op in (5, 6) and heads:  # set id, set length or template id
            at = int(rng.choice(heads)) + int(rng.choice([0, 2, 4]))
            if at + 2 <= len(b):
                b[at : at + 2] = np.frombuffer(int(rng.choice(U16)).to_bytes(2, "big"), np.uint8)
        elif op == 7:
            b = np.concatenate(
                [b[:pos], rng.integers(0, 256, int(rng.integers(1, 9)), np.uint8), b[pos:]]
            )
        else:
            b = np.concatenate([b[:pos], b[pos + int(rng.integers(1, 9)) :]])
    return b.tobytes()


def fuzz(args: argparse.Namespace) -> int:
    import pyarrow as pa
    from tests.collect.test_decoder_fuzz import DECODERS, SCENARIOS, set_headers
    from tests.collect.test_vendor_corpus import REASONS

    from flowhawk.collect.decode.base import ExporterState
    from flowhawk.collect.decode.dispatch import protocol_of

    rng = np.random.default_rng(args.seed)
    names = sorted(SCENARIOS)
    heads = {n: [set_headers(d) for d in SCENARIOS[n]] for n in names}
    reasons: dict[str, Counter] = {p: Counter() for p in DECODERS}
    ignored: Counter = Counter()
    done = mutated = flows = batches = 0
    t0 = time.perf_counter()
    while mutated < args.datagrams:
        name = names[int(rng.integers(len(names)))]
        seeds, proto = SCENARIOS[name], protocol_of(SCENARIOS[name][0])
        rounds = max(1, args.batch // len(seeds))
        batch = []
        for _ in range(rounds):
            for i, d in enumerate(seeds):
                if rng.random() < 0.8:
                    batch.append(mutate(d, heads[name][i], rng))
                    mutated += 1
                else:
                    batch.append(d)
        state = ExporterState("192.0.2.1")
        try:
            result = DECODERS[proto]().decode(batch, list(range(len(batch))), state)
            bad = set(result.errors) - REASONS
            if bad:
                raise AssertionError(f"unknown reasons {bad}")
            json.loads(json.dumps(state.to_json()))
            if args.check_every and batches % args.check_every == 0:
                single, decoder, tables = ExporterState("192.0.2.1"), DECODERS[proto](), []
                for j, d in enumerate(batch):
                    tables.append(decoder.decode([d], [j], single).flows)
                if not pa.concat_tables(tables).equals(result.flows):
                    raise AssertionError("one by one differs from the batch")
        except Exception:
            Path("/tmp/flowhawk-flow-fuzz-failure.bin").write_bytes(pickle.dumps((name, batch)))
            print(f"FAILED on scenario {name}; batch saved to /tmp/flowhawk-flow-fuzz-failure.bin")
            raise
        reasons[proto].update(result.errors)
        ignored.update(result.ignored)
        flows += result.flows.num_rows
        done += len(batch)
        batches += 1
    took = time.perf_counter() - t0
    print(
        f"fuzz: {done:,} datagrams ({mutated:,} mutated) in {batches:,} batches, "
        f"{took:.1f} s, {done / took:,.0f} datagrams/s; {flows:,} flows decoded; "
        f"no exception, every reason known"
    )
    for proto, counter in reasons.items():
        print(f"  {proto}: " + ", ".join(f"{k} {v:,}" for k, v in counter.most_common()))
    print("  ignored: " + ", ".join(f"{k} {v:,}" for k, v in ignored.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
