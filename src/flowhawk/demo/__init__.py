"""The built-in demo: two simulated days of a small company, ready to analyze.

``make_demo(folder)`` writes ``acme-conn.log`` (Zeek TSV), ``acme.toml`` (its
configuration) and ``INCIDENTS.txt`` (what happened, for checking the results).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

from flowhawk.demo.scenario import INCIDENTS, streams
from flowhawk.demo.simulate import generate
from flowhawk.demo.zeekfmt import write_conn_log

DEMO_DAY = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
DEMO_SEED = 20260302


def make_demo(folder: Path) -> tuple[Path, Path]:
    """Write the demo input and config into ``folder``; return (input, config) paths."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "acme-conn.log"
    flows = generate(streams(), DEMO_DAY, hours=48, seed=DEMO_SEED)
    write_conn_log(flows, log, seed=str(DEMO_SEED))
    cfg = folder / "acme.toml"
    cfg.write_text(resources.files("flowhawk.demo").joinpath("demo.toml").read_text())
    day2 = DEMO_DAY + timedelta(days=1)
    lines = [f"{day2:%Y-%m-%d} {t} UTC  {what}" for t, what in INCIDENTS]
    (folder / "INCIDENTS.txt").write_text(
        "Simulated network 'Acme' (sites hq 10.10.0.0/16, plant 10.20.0.0/16); incidents:\n"
        + "\n".join(lines)
        + "\n"
    )
    return log, cfg
