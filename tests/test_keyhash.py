"""The stable key hash: fixed values, so that checkpoints of seen keys stay valid."""

from __future__ import annotations

import polars as pl

from flowhawk.keyhash import stable_hash

TYPES = {"site": pl.String(), "src_ip": pl.String(), "dst_port": pl.Int32(), "proto": pl.Int16()}
COLS = list(TYPES)


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "site": ["hq", "hq", None, ""],
            "src_ip": ["10.0.0.1", "2001:db8::1", "10.0.0.1", "10.0.0.1"],
            "dst_port": [443, None, 443, 443],
            "proto": [6, 17, 6, 6],
        }
    )


def test_the_hash_never_changes():
    """These values are the definition: a change here invalidates every checkpoint."""
    got = [hex(h) for h in stable_hash(_frame(), COLS, TYPES)]
    assert got == ["0x37b2f9795997010e", "0xa88b6428065ce808", "0x2940162ea8966a7c",
                   "0xc95ee0002a26a9ab"]  # fmt: skip


def test_null_and_empty_differ_and_slices_hash_alike():
    df = _frame()
    h = stable_hash(df, COLS, TYPES)
    assert h[2] != h[3], "a null site is not an empty one"
    assert (stable_hash(df[1:], COLS, TYPES) == h[1:]).all(), "offsets of a slice"
    chunked = pl.concat([df[:2], df[2:]], rechunk=False)
    assert (stable_hash(chunked, COLS, TYPES) == h).all()


def test_types_are_cast_first_and_columns_are_ordered():
    df = _frame()
    wide = df.with_columns(pl.col("dst_port").cast(pl.Int64), pl.col("proto").cast(pl.Int64))
    assert (stable_hash(wide, COLS, TYPES) == stable_hash(df, COLS, TYPES)).all()
    swapped = stable_hash(df, ["src_ip", "site", "dst_port", "proto"], TYPES)
    assert (swapped != stable_hash(df, COLS, TYPES)).all()
