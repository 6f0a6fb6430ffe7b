"""Live capture: packets from a network interface metered into flows as they arrive.

Capturing is left to Debian's ``tcpdump`` (``tcpdump -i IFACE -w - -U``), which
already knows every platform quirk, privilege model and BPF filter; its pcap stream
is read from a pipe and metered incrementally by the same kernels as a capture file
(:class:`~flowhawk.sources.pcap.source.CaptureMeter`). Flows are yielded as soon as
they end. When the link is quiet the meter clock is moved on from the wall clock
(packet timestamps come from the same clock), less :data:`CLOCK_SLACK` for packets
still in tcpdump's buffers, so idle flows still end on time.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator

import pyarrow as pa

from flowhawk.errors import InputError
from flowhawk.sources.base import ReadContext
from flowhawk.sources.pcap.source import CaptureMeter

log = logging.getLogger("flowhawk.input")

#: Seconds behind the wall clock the meter is moved to when no packet arrives.
CLOCK_SLACK = 2.0
#: Largest packet captured (tcpdump's own default).
SNAPLEN = 262144
_INSTALL_HINT = "install it with: apt-get install tcpdump"


def tcpdump_command(
    interface: str,
    packet_limit: int | None = None,
    bpf: str | None = None,
    tcpdump: str = "tcpdump",
    snaplen: int = SNAPLEN,
) -> list[str]:
    """The tcpdump command line that writes the capture as a pcap stream to stdout."""
    cmd = [tcpdump, "-i", interface, "-w", "-", "-U", "--immediate-mode", "-s", str(snaplen)]
    if packet_limit is not None:
        cmd += ["-c", str(int(packet_limit))]
    if bpf:
        cmd.append(bpf)
    return cmd


def capture(
    interface: str,
    ctx: ReadContext,
    duration: float | None = None,
    packet_limit: int | None = None,
    bpf: str | None = None,
    *,
    tcpdump: str = "tcpdump",
    tick: float = 1.0,
    clock_slack: float = CLOCK_SLACK,
) -> Iterator[pa.Table]:
    """Capture on ``interface`` and yield raw flow tables as flows end.

    Stops after ``duration`` seconds or ``packet_limit`` packets, or on Ctrl-C (without
    them it runs until the consumer stops iterating); remaining flows are then flushed.
    ``bpf`` is a tcpdump filter expression. Every ``tick`` seconds without packets the
    meter clock moves to the wall clock less ``clock_slack``. Raises :class:`InputError`
    when tcpdump is missing, the interface does not exist, capture is not permitted or
    the filter is bad.
    """
    name = f"live:{interface}"
    exe = shutil.which(tcpdump)
    if exe is None:
        raise InputError(name, f"live capture needs tcpdump, which was not found; {_INSTALL_HINT}")
    ctx.diagnostics.stats(name).format = "live"
    cmd = tcpdump_command(interface, packet_limit, bpf, exe)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise InputError(name, f"cannot run {exe}: {exc.strerror or exc}") from None
    assert proc.stdout is not None and proc.stderr is not None
    stopped = False  # we ended tcpdump ourselves
    try:
        fd = proc.stdout.fileno()
        deadline = None if duration is None else time.monotonic() + duration
        head = _read_head(proc, fd, deadline, name)
        if head is None:
            stopped = True
            return
        stream = CaptureMeter(name, ctx, head)
        space = stream.space()
        space[: len(head)] = head
        stream.commit(len(head))
        while True:
            timeout = tick
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 and not stopped:
                    proc.terminate()  # tcpdump flushes what it has and exits: read to EOF
                    stopped = True
                timeout = max(0.0, min(tick, left))
            try:
                ready, _, _ = select.select([fd], [], [], timeout)
            except KeyboardInterrupt:  # Ctrl-C ends the capture, not the analysis
                deadline = time.monotonic()
                continue
            if ready:
                nbytes = os.readv(fd, [stream.space()])
                if nbytes == 0:
                    break
                stream.commit(nbytes)
            else:
                stream.advance(int((time.time() - clock_slack) * 1e6))
            yield from stream.tables(force=True)
        _check_exit(proc, name, stopped, ctx)
        stream.finish()
        yield from stream.tables(force=True)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def _read_head(
    proc: subprocess.Popen[bytes], fd: int, deadline: float | None, name: str
) -> bytes | None:
    """The 24-byte pcap header tcpdump writes once capture has started (None: stopped early)."""
    head = b""
    while len(head) < 24:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:  # the duration ended before tcpdump started capturing
            return None
        chunk = os.read(fd, 24 - len(head))
        if not chunk:
            raise _start_error(proc, name)
        head += chunk
    return head


def _start_error(proc: subprocess.Popen[bytes], name: str) -> InputError:
    """An InputError saying why tcpdump stopped before capturing anything."""
    assert proc.stderr is not None
    proc.wait()
    err = proc.stderr.read().decode(errors="replace").strip()
    low = err.lower()
    if "permission" in low or "not permitted" in low:
        why = (
            "capture is not permitted: run as root or give tcpdump the capture capability "
            "(setcap cap_net_raw,cap_net_admin=eip $(which tcpdump))"
        )
    elif "no such device" in low or "doesn't exist" in low or "not exist" in low:
        why = "no such network interface"
    elif "syntax error" in low or "can't parse filter" in low or "illegal" in low:
        why = "invalid capture filter"
    else:
        why = f"tcpdump exited with status {proc.returncode}"
    return InputError(name, f"{why}: {err.splitlines()[-1] if err else 'no message'}")


def _check_exit(proc: subprocess.Popen[bytes], name: str, stopped: bool, ctx: ReadContext) -> None:
    """Record a tcpdump failure after capture started (what was captured is still used)."""
    assert proc.stderr is not None
    code = proc.wait()
    if code != 0 and not stopped:
        err = proc.stderr.read().decode(errors="replace").strip()
        ctx.diagnostics.fail(name, f"tcpdump exited with status {code}: {err}")
