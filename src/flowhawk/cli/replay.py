"""``flowhawk replay``: send captures and flow logs to a collector as NetFlow, IPFIX or sFlow."""

from __future__ import annotations

from pathlib import Path

import typer

from flowhawk import config as cfgmod
from flowhawk.cli import app, make_console
from flowhawk.cli.analyze import ConfigOpt, FormatOpt, QuietOpt, _check_format
from flowhawk.collect import replay as exporter
from flowhawk.collect.replay import (
    PROTOCOLS,
    ExportSettings,
    ReplayError,
    ReplayResult,
    parse_target,
)
from flowhawk.pipeline import NothingReadable

console = make_console()


@app.command()
def replay(
    inputs: list[Path] = typer.Argument(
        None, help="Captures, flow logs or folders of them.", show_default=False
    ),
    to: str = typer.Option(
        ..., "--to", help="Collector HOST:PORT (UDP); IPv6 as [ADDR]:PORT.", show_default=False
    ),
    protocol: str = typer.Option(
        ..., "--protocol", "-p", help="v5, v9, ipfix or sflow.", show_default=False
    ),
    rate: float | None = typer.Option(
        None, "--rate", help="Input flows per second (default: as fast as possible)."
    ),
    sampling: int = typer.Option(1, "--sampling", help="sflow: sample 1 in N packets."),
    source_id: int = typer.Option(
        0,
        "--source-id",
        help="v9 source id, IPFIX observation domain, v5 engine id, sFlow sub-agent id.",
    ),
    loop: bool = typer.Option(
        False, "--loop", help="Replay again and again (Ctrl-C stops), each round later in time."
    ),
    now: bool = typer.Option(
        False, "--now", help="Move flow times so the first flow starts now (default: own times)."
    ),
    biflow: bool = typer.Option(False, "--biflow", help="ipfix: RFC 5103 biflow records."),
    timestamps: str = typer.Option(
        "ms",
        "--timestamps",
        help="ipfix: flowStart/End Milliseconds (ms), Microseconds (us) or Nanoseconds (ns); "
        "nfdump 1.7 reads ms only.",
    ),
    agent: str = typer.Option("127.0.0.1", "--agent", help="sflow: agent address to announce."),
    max_datagram: int = typer.Option(
        1400, "--max-datagram", help="Largest export payload per UDP datagram, in bytes."
    ),
    config: Path | None = ConfigOpt,
    fmt: str | None = FormatOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Send the flows of INPUTS to a collector as export datagrams.

    Inputs are read as `analyze` reads them (pcap, Zeek, nfdump, Argus, ...).

    Times: records carry the flows' own start and end; a datagram's header
    time is the latest flow end in it, so a collector archives the flows in
    event time. --now moves all times so the first flow starts now.

    v5, v9 and IPFIX send each flow as a client->server record and, when the
    server answered, a server->client record (--biflow: one RFC 5103 IPFIX
    record). v5 carries no IPv6: those flows are skipped and counted.
    sFlow is statistical by nature: each flow direction becomes
    ceil(packets / N) sampled packet headers at sampling rate 1 in N.

    Exit status: 0 when flows were sent, 1 when nothing could be read,
    2 on usage errors.
    """
    if not inputs:
        raise typer.BadParameter("give at least one input (file or folder)", param_hint="INPUTS")
    if protocol not in PROTOCOLS:
        raise typer.BadParameter(
            f"unknown protocol {protocol!r}; use one of: {', '.join(PROTOCOLS)}",
            param_hint="--protocol",
        )
    _check_format(fmt)
    try:
        parse_target(to)
    except ReplayError as exc:
        raise typer.BadParameter(str(exc), param_hint="--to") from None
    if rate is not None and rate <= 0:
        raise typer.BadParameter("a positive number of flows per second", param_hint="--rate")
    settings = ExportSettings(
        protocol=protocol,  # type: ignore[arg-type]
        source_id=source_id,
        max_datagram=max_datagram,
        sampling=sampling,
        agent=agent,
        biflow=biflow,
        time_precision=timestamps,  # type: ignore[arg-type]
    )
    try:
        settings.check()
    except ReplayError as exc:
        raise typer.BadParameter(str(exc)) from None
    cfg = cfgmod.load(config)
    if not quiet:
        what = f"{protocol}" + (f" (1 in {sampling})" if protocol == "sflow" else "")
        pace = f"at {rate:g} flows/s" if rate else "as fast as possible"
        console.print(f"replaying to {to} as {what}, {pace}" + (" (Ctrl-C stops)" if loop else ""))
    try:
        result = exporter.replay(inputs, to, settings, cfg, fmt=fmt, rate=rate, loop=loop, now=now)
    except NothingReadable as exc:
        err = make_console(stderr=True)
        err.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        for issue in exc.diagnostics.issues:
            err.print(f"  {issue}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if not quiet:
        _summary(result)


def _summary(result: ReplayResult) -> None:
    st = result.stats
    console.print(
        f"sent {st.flows:,} flows as {st.records:,} "
        + ("flow samples" if result.settings.protocol == "sflow" else "records")
        + f" in {st.datagrams:,} datagrams ({st.bytes:,} bytes) in {st.elapsed:.2f} s: "
        f"{st.flow_rate:,.0f} flows/s, {st.datagram_rate:,.0f} datagrams/s "
        f"({st.wall:.2f} s with reading)" + (f", {st.rounds} rounds" if st.rounds > 1 else ""),
        highlight=False,
    )
    if st.skipped:
        console.print(f"skipped {st.skipped:,} IPv6 flows (NetFlow v5 carries IPv4 only)")
    if result.interrupted:
        console.print("interrupted")
    for stats in result.diagnostics.inputs.values():
        if stats.failed:
            console.print(f"[red]could not read[/] {stats.name}: {stats.failed}", highlight=False)
        elif stats.skipped_total:
            console.print(f"{stats.name}: {stats.skipped_total:,} records skipped", highlight=False)
