"""``flowhawk serve``: the long-running service (collectors, detection, API, outputs)."""

from __future__ import annotations

from pathlib import Path

import typer

from flowhawk import config as cfgmod
from flowhawk.cli import app, make_console

console = make_console()


@app.command()
def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file."),
    data: Path = typer.Option(Path("data"), "--data", "-d", help="Data directory."),
    listen: str | None = typer.Option(
        None, "--listen", help="API HOST:PORT (default [serve] listen, 127.0.0.1:8080)."
    ),
    intel: list[str] = typer.Option(
        [],
        "--intel",
        help="Threat-intelligence feed (file, folder or URL; format detected), besides the "
        "configured feeds and the data directory's snapshot. Repeatable.",
    ),
    demo: bool = typer.Option(
        False,
        "--demo",
        help="Feed the service with the simulated Acme network through the built-in "
        "exporter (its config unless --config).",
    ),
    demo_rate: float = typer.Option(
        10_000, "--demo-rate", help="--demo: flows per second sent to the collector."
    ),
) -> None:
    """Run collectors, live detection, the event store, outputs and the REST API.

    The API (OpenAPI at /api/v1/openapi.json) needs a token: on the first start, an
    admin user is created and its token printed once; more with `flowhawk tokens add`.
    SIGINT or SIGTERM stops it cleanly: queued flows are archived and detected, models
    and templates checkpointed, outputs flushed (undelivered events stay queued).
    """
    from flowhawk.serve.app import check_tls, run
    from flowhawk.serve.service import Service

    feeder_inputs = None
    if demo:
        from flowhawk.serve.demo import demo_config

        demo_cfg, feeder_inputs = demo_config(data / "demo")
        cfg = cfgmod.load(config) if config else demo_cfg
    else:
        cfg = cfgmod.load(config)
    if listen:
        cfgmod.parse_hostport(listen)
        cfg.serve.listen = listen
    check_tls(cfg)
    svc = Service(cfg, data, intel=intel)
    token = svc.auth.bootstrap_admin()
    if token:
        console.print(
            "created user [bold]admin[/]; its API token (shown once, keep it):", highlight=False
        )
        console.print(token, highlight=False, soft_wrap=True)
    feeder = None

    def ready(host: str, port: int) -> None:
        nonlocal feeder
        scheme = "https" if cfg.serve.tls_cert else "http"
        console.print(
            f"API: {scheme}://{host}:{port}/api/v1 (docs at /api/v1/docs)", highlight=False
        )
        if svc.collector is not None:
            ports = ", ".join(f"{a} (udp {p})" for a, p in svc.collector.ports())
            console.print(f"collecting on {ports}", highlight=False)
        if feeder_inputs is not None and svc.collector is not None:
            from flowhawk.serve.demo import DemoFeeder

            port0 = svc.collector.ports()[0][1]
            feeder = DemoFeeder(cfg, feeder_inputs, port0, demo_rate)
            feeder.start()
            console.print(
                f"demo: replaying the Acme network at {demo_rate:,.0f} flows/s", highlight=False
            )
        console.print("stop with Ctrl-C", highlight=False)

    try:
        run(svc, on_ready=ready)
    finally:
        if feeder is not None:
            feeder.stop()
        svc.stop()
    t = svc.collector.totals if svc.collector is not None else None
    if t is not None:
        console.print(
            f"stopped: {t.flows_archived:,} flows archived; events in {data / 'events.duckdb'}",
            highlight=False,
        )
