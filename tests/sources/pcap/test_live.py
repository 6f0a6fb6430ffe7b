"""Live capture through tcpdump on the loopback interface, and its error reporting."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.schema import RAW_FLOW_SCHEMA
from flowhawk.sources.base import ReadContext
from flowhawk.sources.pcap.live import capture, tcpdump_command

pytestmark = pytest.mark.live


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send_later(port: int, count: int, delay: float = 0.7, size: int = 100) -> threading.Thread:
    def send() -> None:
        time.sleep(delay)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(count):
                s.sendto(b"x" * size, ("127.0.0.1", port))
                time.sleep(0.01)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def can_capture() -> None:
    try:
        list(capture("lo", ReadContext(Diagnostics()), duration=0.5, bpf="udp port 9"))
    except InputError as exc:
        if "not permitted" in str(exc):
            pytest.skip(f"live capture is not permitted here: {exc}")
        raise


def test_capture_meters_loopback_traffic(can_capture: None) -> None:
    port = _free_port()
    ctx = ReadContext(Diagnostics())
    sender = _send_later(port, 10)
    tables = list(capture("lo", ctx, duration=2.0, bpf=f"udp port {port}"))
    sender.join()
    table = pa.concat_tables(tables)
    assert table.schema == RAW_FLOW_SCHEMA
    (flow,) = table.to_pylist()
    assert (flow["src_ip"], flow["dst_ip"], flow["dst_port"], flow["proto"]) == (
        "127.0.0.1",
        "127.0.0.1",
        port,
        17,
    )
    assert (flow["src_pkts"], flow["src_bytes"], flow["orient"]) == (10, 10 * 128, "start")
    assert flow["input"] == "live:lo" and flow["src_mac"] == "00:00:00:00:00:00"
    stats = ctx.diagnostics.inputs["live:lo"]
    assert (stats.format, stats.packets, stats.failed) == ("live", 10, "")


def test_packet_limit_ends_the_capture(can_capture: None) -> None:
    port = _free_port()
    ctx = ReadContext(Diagnostics())
    sender = _send_later(port, 30, delay=0.5)
    start = time.monotonic()
    tables = list(capture("lo", ctx, duration=20, packet_limit=5, bpf=f"udp port {port}"))
    assert time.monotonic() - start < 10
    sender.join()
    assert sum(t["src_pkts"].to_pylist()[0] for t in tables) == 5
    assert ctx.diagnostics.inputs["live:lo"].packets == 5


def test_idle_flows_end_while_the_link_is_quiet(can_capture: None) -> None:
    port = _free_port()
    ctx = ReadContext(Diagnostics(), options={"idle_timeout": 0.5})
    _send_later(port, 1, delay=0.3)
    start = time.monotonic()
    arrivals = []
    for table in capture(
        "lo", ctx, duration=3.0, bpf=f"udp port {port}", tick=0.2, clock_slack=0.2
    ):
        arrivals.append((time.monotonic() - start, table.num_rows))
    assert len(arrivals) == 1 and arrivals[0][1] == 1
    assert arrivals[0][0] < 2.5  # yielded by the clock, not by the end of the capture


def test_missing_tcpdump_says_how_to_install_it() -> None:
    with pytest.raises(InputError, match="apt-get install tcpdump"):
        list(capture("lo", ReadContext(Diagnostics()), duration=1, tcpdump="/nonexistent/tcpdump"))


def test_unknown_interface_and_bad_filter(can_capture: None) -> None:
    with pytest.raises(InputError, match="no such network interface"):
        list(capture("nosuchif0", ReadContext(Diagnostics()), duration=2))
    with pytest.raises(InputError, match="invalid capture filter"):
        list(capture("lo", ReadContext(Diagnostics()), duration=2, bpf="port port port"))


def test_capture_not_permitted(tmp_path: Path) -> None:
    fake = tmp_path / "tcpdump"  # behaves like tcpdump run by an unprivileged user
    fake.write_text(
        "#!/bin/sh\necho \"tcpdump: eth0: You don't have permission to capture on "
        'that device (socket: Operation not permitted)" >&2\nexit 1\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(InputError, match=r"not permitted.*setcap"):
        list(capture("eth0", ReadContext(Diagnostics()), duration=2, tcpdump=str(fake)))


def test_command_line() -> None:
    cmd = tcpdump_command("eth1", packet_limit=7, bpf="tcp port 80")
    assert cmd[:6] == ["tcpdump", "-i", "eth1", "-w", "-", "-U"]
    assert cmd[-3:] == ["-c", "7", "tcp port 80"] and "262144" in cmd
    assert os.path.basename(cmd[0]) == "tcpdump"
