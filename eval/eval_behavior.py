"""Detection quality of the behavioral methods (M2-M25) on simulated and real traffic.

Simulated (labels known): for each seed, ``flowhawk.sim`` writes a 7-day site (3
anomaly-free days to learn from, then two of each anomaly kind) and the same site
with no anomalies at all. Both are analyzed with the configuration the simulator writes
(learning period: the clean days; everything else default). An alarm of method M is
*explained* when it names a key an anomaly touched in M's view (the simulator's label
rows, measured on the flows) and its time overlaps the anomaly's window (from one
bucket before it to ``--grace`` after it: silence is reported when the allowance runs
out, velocity fires again when a key returns to normal). Printed per method:

- alarms after learning, precision (explained / all), false alarms per scored day;
- recall: of the label rows that expect M (the key changed enough, see
  :mod:`flowhawk.sim.labels`), the share with at least one explained M alarm;
- on the anomaly-free run: alarms per scored day (all of them are false), and the
  events they make per day (an analyst's queue: one communication's alarms in one
  window are one event);
- per anomaly: which methods fired on it.

Real: the Stratosphere CTU-Normal captures 008 and 010 (a day of one user's
workstation, with attacks from outside) are analyzed with the first ``--learn-hours``
hours as the learning period; printed are alarms per hour after learning by method,
and the top reasons, so they can be read.

The methods' defaults are chosen on seed 13 (see eval/README.md); the seeds reported
by default (11, 12, 14) are run before and after a choice, not to make it (one
exception, said there: the own-threshold changes came from a miss seen on seed 11,
then were chosen on seed 13). Still, the
defaults were chosen on simulated and demo traffic of the same generator: read the
simulated figures as "the methods do what they should on this kind of traffic", not as
a field precision.

Run:  .venv/bin/python eval/eval_behavior.py [--seeds 11 12 14] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from flowhawk import config
from flowhawk.pipeline import run
from flowhawk.sim import SimSettings, simulate
from flowhawk.sim.write import config_path, labels_path, write_flows, write_labels

BEHAVIOR = [f"M{i}" for i in range(2, 26)]
METHODS = ["M1", *BEHAVIOR, "M30", "M31"]
VIEW_OF = {
    **{m: "comm" for m in ("M1", "M30", "M31")},
    **{f"M{i}": "comm" for i in range(2, 12)},
    "M12": "port", "M13": "port", "M14": "client_port", "M15": "client_port",
    "M16": "server_port", "M17": "server_port", "M18": "comm", "M19": "comm",
    "M20": "ext_tcp", "M21": "int_tcp", "M22": "ext_udp", "M23": "int_udp",
    "M24": "ext_icmp", "M25": "int_icmp",
}  # fmt: skip
#: The label columns that name a key in each view (the alarm's columns to compare).
KEY_OF = {
    "comm": (("src_ip", "src_ip"), ("dst_ip", "dst_ip"), ("dst_port", "dst_port"),
             ("proto", "proto")),
    "port": (("dst_port", "dst_port"), ("proto", "proto")),
    "client_port": (("src_ip", "src_ip"), ("dst_port", "dst_port"), ("proto", "proto")),
    "server_port": (("dst_ip", "dst_ip"), ("dst_port", "dst_port"), ("proto", "proto")),
}  # fmt: skip
REAL = {
    "008": "labeled/stratosphere_scenarios/008-zeek-mixed/data/conn.log.labeled",
    "010": "labeled/stratosphere_scenarios/010-zeek-mixed/data/conn.log.labeled",
}


def table_config(**more: object) -> pl.Config:
    """Print whole tables (a new Config each time: options apply when it is made)."""
    return pl.Config(tbl_cols=-1, tbl_rows=-1, tbl_width_chars=250, fmt_str_lengths=160, **more)


def analyze(flows: Path, cfg_file: Path | None, out: Path, fmt: str | None, **cfg) -> tuple:
    """Run the pipeline; (result, alarms after learning, seconds)."""
    cfg_obj = config.load(cfg_file) if cfg_file else config.from_dict(cfg)
    t = time.perf_counter()
    result = run([flows], cfg_obj, out / "data", out / "out", fmt=fmt)
    took = time.perf_counter() - t
    alarms = result.alarms
    if result.learning_until is not None and alarms.height:
        alarms = alarms.filter(pl.col("ts") >= result.learning_until)
    return result, alarms, took


def key_match(alarms: pl.DataFrame, labels: pl.DataFrame, grace: timedelta) -> pl.DataFrame:
    """Pairs (alarm index, label row index) where the alarm names the label's key in its
    method's view and overlaps the label's window."""
    a = alarms.with_row_index("a").with_columns(
        view=pl.col("method").replace_strict(VIEW_OF, default=None)
    )
    lab = labels.with_row_index("l").with_columns(
        start=pl.col("start").str.to_datetime(time_zone="UTC"),
        end=pl.col("end").str.to_datetime(time_zone="UTC"),
    )
    pairs = []
    for view, cols in KEY_OF.items():
        lv = lab.filter(pl.col("view") == view)
        av = a.filter(pl.col("view") == view)
        if lv.height and av.height:
            pairs.append(
                av.join(lv, left_on=[c for c, _ in cols], right_on=[c for _, c in cols]).select(
                    "a", "l", "ts", "ts_end", "start", "end"
                )
            )
    for view in ("ext_tcp", "int_tcp", "ext_udp", "int_udp", "ext_icmp", "int_icmp"):
        lv = lab.filter(pl.col("view") == view)
        av = a.filter(pl.col("view") == view)
        if lv.height and av.height:
            pairs.append(
                av.join(lv, left_on="entity", right_on="ip").select(
                    "a", "l", "ts", "ts_end", "start", "end"
                )
            )
    if not pairs:
        return pl.DataFrame(schema={"a": pl.UInt32, "l": pl.UInt32})
    both = pl.concat(pairs)
    return both.filter(
        (pl.col("ts_end") > pl.col("start") - timedelta(minutes=1))
        & (pl.col("ts") < pl.col("end") + grace)
    ).select("a", "l")


def simulated(seed: int, days: int, grace: timedelta, tmp: Path) -> None:
    print(f"\n=== simulated site, seed {seed}: {days} days, 3 clean days to learn from ===")
    runs = {}
    for kinds in ("all", "none"):
        settings = SimSettings(days=days, seed=seed, start=date(2026, 3, 2))
        if kinds == "none":
            settings.anomalies = ()
        t = time.perf_counter()
        sim = simulate(settings)
        path = tmp / f"sim-{seed}-{kinds}.parquet"
        write_flows(sim, path)
        if sim.labels.height:
            write_labels(sim, labels_path(path))
        took_sim = time.perf_counter() - t
        result, alarms, took = analyze(path, config_path(path), tmp / f"run-{seed}-{kinds}", None)
        scored = (sim.flows.get_column("ts_start").max() - result.learning_until).total_seconds()
        runs[kinds] = (sim, alarms, scored / 86400.0)
        print(
            f"{kinds:>4} anomalies: {sim.flows.height:,} flows (simulated in {took_sim:.1f} s), "
            f"analyzed in {took:.1f} s; {alarms.height:,} alarms after learning "
            f"over {scored / 86400:.2f} days"
        )
    sim, alarms, days_scored = runs["all"]
    _, clean, clean_days = runs["none"]
    labels = sim.labels
    pairs = key_match(alarms, labels, grace)
    explained = set(pairs.get_column("a").to_list())
    a = alarms.with_row_index("a").with_columns(explained=pl.col("a").is_in(list(explained)))
    lab = labels.with_row_index("l")
    rows = []
    for m in METHODS:
        am = a.filter(pl.col("method") == m)
        expect = lab.filter(pl.col("methods").str.split(";").list.contains(m))
        hit_l = pairs.join(am.select("a"), on="a").get_column("l").unique()
        found = expect.filter(pl.col("l").is_in(hit_l.to_list()))
        n_exp = expect.height
        rows.append(
            {
                "method": m,
                "alarms": am.height,
                "explained": int(am.get_column("explained").sum()),
                "precision": am.get_column("explained").mean() if am.height else None,
                "false/day": (am.height - int(am.get_column("explained").sum())) / days_scored,
                "expected keys": n_exp,
                "found": found.height,
                "recall": found.height / n_exp if n_exp else None,
                "clean run alarms/day": clean.filter(pl.col("method") == m).height / clean_days,
            }
        )
    with table_config(float_precision=2):
        print(pl.DataFrame(rows))
    beh = [r for r in rows if r["method"] in BEHAVIOR]
    n = sum(r["alarms"] for r in beh)
    ok = sum(r["explained"] for r in beh)
    exp = sum(r["expected keys"] for r in beh)
    fnd = sum(r["found"] for r in beh)
    clean_beh = clean.filter(pl.col("method").is_in(BEHAVIOR))
    clean_events = clean_beh.get_column("event_id").n_unique() if clean_beh.height else 0
    print(
        f"M2-M25 together: precision {ok / max(n, 1):.2f} ({ok}/{n}), "
        f"recall {fnd / max(exp, 1):.2f} ({fnd}/{exp} expected keys), "
        f"false alarms/day {(n - ok) / days_scored:.1f}, "
        f"anomaly-free run {clean_beh.height / clean_days:.1f} alarms/day "
        f"in {clean_events / clean_days:.1f} events/day"
    )
    per = (
        pairs.join(a.select("a", "method"), on="a")
        .join(lab.select("l", "id"), on="l")
        .group_by("id")
        .agg(pl.col("method").unique().sort().str.join(" ").alias("methods that fired"))
    )
    expected = lab.group_by("id").agg(
        pl.col("kind").first(),
        pl.col("variant").first(),
        pl.col("methods").str.split(";").list.eval(pl.element().filter(pl.element() != ""))
        .explode().drop_nulls().unique().sort().str.join(" ").alias("expected"),
    )  # fmt: skip
    table = expected.join(per, on="id", how="left").sort("id")
    with table_config():
        print(table)


def real(name: str, path: Path, learn_hours: float, tmp: Path) -> None:
    result, alarms, took = analyze(
        path, None, tmp / f"real-{name}", "zeek", learning={"period": f"{learn_hours}h"}
    )
    first = pl.read_csv(path, separator="\t", comment_prefix="#", has_header=False,
                        columns=[0], infer_schema=False, quote_char=None)  # fmt: skip
    ts = first.get_column(first.columns[0]).cast(pl.Float64)
    end = float(ts.max())
    hours = (end - result.learning_until.timestamp()) / 3600.0
    beh = alarms.filter(pl.col("method").is_in(BEHAVIOR))
    print(
        f"\n=== CTU {name}: {result.flows:,} flows, learning {learn_hours} h "
        f"(until {result.learning_until:%Y-%m-%d %H:%M}), {hours:.1f} h scored, "
        f"analyzed in {took:.1f} s ==="
    )
    print(
        f"alarms after learning: {alarms.height} ({alarms.height / hours:.1f}/h), of which "
        f"M2-M25 {beh.height} ({beh.height / hours:.2f}/h); events "
        f"{result.events.height}"
    )
    if alarms.height:
        by = alarms.group_by("method").agg(
            pl.len().alias("alarms"),
            (pl.len() / hours).alias("per hour"),
            pl.col("reason").sort_by("score", descending=True).first().alias("top reason"),
        )
        order = {m: i for i, m in enumerate(METHODS)}
        by = by.sort(pl.col("method").replace_strict(order, default=99))
        with table_config(float_precision=2):
            print(by)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--seeds", type=int, nargs="*", default=[11, 12, 14])
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--grace", type=float, default=30.0, help="minutes after a window")
    ap.add_argument("--learn-hours", type=float, default=12.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            simulated(seed, args.days, timedelta(minutes=args.grace), Path(tmp))
        for name, rel in REAL.items():
            real(name, args.data / rel, args.learn_hours, Path(tmp))


if __name__ == "__main__":
    main()
