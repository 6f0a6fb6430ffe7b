"""The file output (read back from disk) and the TCP output (a real line receiver)."""

from __future__ import annotations

import json

import pytest

from flowhawk.errors import ConfigError
from flowhawk.outputs import validate
from flowhawk.outputs.base import DeliveryError
from flowhawk.outputs.cef import cef_message
from flowhawk.outputs.delivery import Delivery
from tests.outputs.receivers import (
    HOST,
    build,
    docs,
    free_port,
    ids_of,
    line_receiver,
    tls_files,
    wait_for,
)

# -- file --------------------------------------------------------------------------------


def test_file_json_lines_relative_to_the_data_dir(tmp_path):
    out = build({"name": "f", "type": "file", "path": "exports/events.jsonl"}, tmp_path)
    out.send(docs(3))
    out.send([])
    out.close()
    out.send(docs(2, start=3))  # reopens and appends
    out.close()
    path = tmp_path / "exports" / "events.jsonl"
    lines = path.read_text().splitlines()
    assert [json.loads(x) for x in lines] == docs(5)
    assert lines[0].startswith('{"id":"ev0000","ts_start":')  # compact, one per line


def test_file_cef(tmp_path):
    path = tmp_path / "cef.log"
    out = build({"name": "f", "type": "file", "path": str(path), "format": "cef"}, tmp_path)
    out.send(docs(2))
    out.close()
    assert path.read_text().splitlines() == [cef_message(d) for d in docs(2)]
    assert "externalId=ev0001" in path.read_text()


def test_file_rotation_keeps_the_newest(tmp_path):
    path = tmp_path / "e.jsonl"
    one = len(json.dumps(docs(1)[0], separators=(",", ":"), ensure_ascii=False)) + 1
    settings = {"name": "f", "type": "file", "path": str(path), "keep": 2}
    out = build({**settings, "rotate_bytes": one * 2 + 10}, tmp_path)
    for i in range(5):  # one event per batch: two fit in a file
        out.send(docs(1, start=i))
    out.close()
    ids = {p.name: [json.loads(x)["id"] for x in p.read_text().splitlines()] for p in [
        path, path.with_name("e.jsonl.1"), path.with_name("e.jsonl.2")
    ]}  # fmt: skip
    assert ids == {
        "e.jsonl": ["ev0004"],
        "e.jsonl.1": ["ev0002", "ev0003"],
        "e.jsonl.2": ["ev0000", "ev0001"],
    }
    assert not path.with_name("e.jsonl.3").exists()
    out.send(docs(3, start=5))  # a batch is never split: the file may exceed the size
    out.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ids_of(docs(3, start=5))
    assert not path.with_name("e.jsonl.3").exists()

    never = tmp_path / "never.jsonl"
    out = build({**settings, "path": str(never), "rotate_bytes": 0}, tmp_path)
    for i in range(5):
        out.send(docs(1, start=i))
    out.close()
    assert (
        len(never.read_text().splitlines()) == 5 and not never.with_name("never.jsonl.1").exists()
    )

    nothing_kept = tmp_path / "k0.jsonl"
    out = build({**settings, "path": str(nothing_kept), "keep": 0, "rotate_bytes": one}, tmp_path)
    out.send(docs(1))
    out.send(docs(1, start=1))
    out.close()
    assert [json.loads(x)["id"] for x in nothing_kept.read_text().splitlines()] == ["ev0001"]
    assert not nothing_kept.with_name("k0.jsonl.1").exists()


def test_file_unwritable_raises_os_error(tmp_path):
    (tmp_path / "file").write_text("x")
    out = build({"name": "f", "type": "file", "path": str(tmp_path / "file" / "e.jsonl")}, tmp_path)
    with pytest.raises(OSError):
        out.send(docs(1))
    out.close()


# -- tcp ---------------------------------------------------------------------------------


def tcp(port: int, **kw):
    return {"name": "t", "type": "tcp", "host": HOST, "port": port, "timeout": 2.0, **kw}


def test_tcp_json_lines_on_one_connection(tmp_path):
    with line_receiver() as r:
        out = build(tcp(r.port), tmp_path)
        out.send(docs(3))
        out.send(docs(2, start=3))
        wait_for(lambda: len(r.lines) == 5, what="5 lines")
        assert [json.loads(x) for x in r.lines] == docs(5)
        assert r.connections == 1
        out.close()
        out.close()


def test_tcp_cef_lines(tmp_path):
    with line_receiver() as r:
        out = build(tcp(r.port, format="cef"), tmp_path)
        out.send(docs(2))
        wait_for(lambda: len(r.lines) == 2)
        assert r.lines == [cef_message(d) for d in docs(2)]
        out.close()


def test_tcp_reconnects_after_the_receiver_restarts(tmp_path):
    port = free_port()
    out = build(tcp(port, retry_min=0.05, retry_max=0.2), tmp_path)
    with line_receiver(port) as first:
        out.send(docs(2))
        wait_for(lambda: len(first.lines) == 2)
    with pytest.raises(DeliveryError, match="cannot connect"):
        out.send(docs(1, start=2))  # the receiver's end was noticed: reconnecting fails
    with line_receiver(port) as second:
        out.send(docs(2, start=2))
        wait_for(lambda: len(second.lines) == 2)
        assert second.ids() == ["ev0002", "ev0003"]
    out.close()


def test_tcp_through_delivery_while_the_receiver_comes_and_goes(tmp_path):
    port = free_port()
    d = Delivery([build(tcp(port, retry_min=0.05, retry_max=0.2, batch=5), tmp_path)], [], tmp_path)
    d.start()
    try:
        with line_receiver(port) as r:
            d.publish(docs(10))
            wait_for(lambda: len(r.lines) == 10)
        d.publish(docs(10, start=10))
        wait_for(lambda: d.status()[0]["failures"] >= 1, what="a failure while down")
        with line_receiver(port) as r2:
            wait_for(lambda: d.status()[0]["backlog"] == 0, what="the backlog to drain")
            wait_for(lambda: len(set(r2.ids())) == 10)
            assert sorted(set(r2.ids())) == ids_of(docs(10, start=10))
    finally:
        d.stop()


def test_tcp_tls(tmp_path):
    cert, _ = tls_files()
    with line_receiver(tls=True) as r:
        out = build(tcp(r.port, tls=True, ca_file=str(cert)), tmp_path)
        out.send(docs(3))
        wait_for(lambda: len(r.lines) == 3)
        assert r.ids() == ids_of(docs(3))
        out.close()
        untrusted = build(tcp(r.port, tls=True), tmp_path)
        with pytest.raises(DeliveryError, match="certificate was rejected"):
            untrusted.send(docs(1))
        unverified = build(tcp(r.port, tls=True, verify=False), tmp_path)
        unverified.send(docs(1, start=9))
        wait_for(lambda: "ev0009" in r.ids())
        unverified.close()


def test_tcp_settings_errors():
    with pytest.raises(ConfigError, match="ca_file is only used with tls = true"):
        validate([{"name": "t", "type": "tcp", "host": "h", "port": 1, "ca_file": "/x"}], "f")
    with pytest.raises(ConfigError, match="'port'"):
        validate([{"name": "t", "type": "tcp", "host": "h", "port": 70000}], "f")
    with pytest.raises(ConfigError, match="missing key 'host'"):
        validate([{"name": "t", "type": "tcp", "port": 9}], "f")
    with pytest.raises(ConfigError, match="'format'"):
        validate([{"name": "f", "type": "file", "path": "x", "format": "xml"}], "f")
    with pytest.raises(ConfigError, match="missing key 'path'"):
        validate([{"name": "f", "type": "file"}], "f")
