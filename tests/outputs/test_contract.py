"""Contract tests run over every registered output type, each against a real receiver.

Receivers come from :data:`tests.outputs.receivers.RECEIVERS` (and settings aimed at a
receiver that is down from :data:`~tests.outputs.receivers.DOWN`); a type without one
is skipped by the receiver-based tests, naming what is missing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from flowhawk.outputs import OUTPUTS
from flowhawk.outputs.base import DeliveryError, Output, OutputSettings
from tests.outputs.receivers import DOWN, RECEIVERS, build, docs, ids_of, wait_for

ALL = OUTPUTS.names()


def receiver(kind: str):
    if kind not in RECEIVERS:
        pytest.skip(
            f"no receiver registered for output type {kind!r}: add it to RECEIVERS and DOWN "
            "in tests/outputs/receivers.py"
        )
    return RECEIVERS[kind]


@pytest.mark.parametrize("kind", ALL)
def test_shape_and_documented_settings(kind):
    cls = OUTPUTS.get(kind)
    assert issubclass(cls, Output) and cls.type == kind
    assert cls.description and cls.__doc__
    assert issubclass(cls.Settings, OutputSettings) and cls.Settings is not OutputSettings
    undocumented = [n for n, f in cls.Settings.model_fields.items() if not f.description]
    assert not undocumented, f"{kind}: settings without a description: {undocumented}"
    assert cls.Settings.model_fields["type"].annotation is not str, "type must be a Literal"
    for method in ("open", "send", "close"):
        assert getattr(cls, method).__doc__, f"{kind}.{method} is not documented"


@pytest.mark.parametrize("kind", ALL)
def test_settings_validate_and_reject_unknown_keys(kind, tmp_path):
    with receiver(kind)(tmp_path) as (settings, _):
        parsed = OUTPUTS.get(kind).Settings.model_validate(settings)
        assert parsed.name == settings["name"] and parsed.type == kind
        with pytest.raises(ValidationError, match="no_such_setting"):
            OUTPUTS.get(kind).Settings.model_validate({**settings, "no_such_setting": 1})
        other = next(k for k in ALL if k != kind)
        with pytest.raises(ValidationError):
            OUTPUTS.get(kind).Settings.model_validate({**settings, "type": other})


@pytest.mark.parametrize("kind", ALL)
def test_send_delivers_exactly_the_batch(kind, tmp_path):
    with receiver(kind)(tmp_path) as (settings, received):
        out = build(settings, tmp_path)
        assert out.name == settings["name"] and out.data_dir == tmp_path
        out.send([])  # harmless
        out.open()
        out.send(docs(3))
        got = wait_for(lambda: received() if len(received()) >= 3 else None, timeout=10)
        assert sorted(got) == ids_of(docs(3))
        out.close()
        out.close()  # idempotent
        out.send(docs(2, start=3))  # usable again after close
        wait_for(lambda: len(received()) >= 5, timeout=10)
        assert sorted(received()) == ids_of(docs(5))
        out.close()


@pytest.mark.parametrize("kind", ALL)
def test_send_to_a_down_receiver_raises_in_time(kind, tmp_path):
    receiver(kind)
    settings = DOWN[kind](tmp_path)
    out = build(settings, tmp_path)
    t0 = time.monotonic()
    with pytest.raises((DeliveryError, OSError)):
        out.open()
        out.send(docs(3))
    assert time.monotonic() - t0 < float(settings.get("timeout", 10.0)) + 1.0
    out.close()
    out.close()


@pytest.mark.parametrize("kind", ALL)
def test_settings_paths_and_names(kind, tmp_path: Path):
    with receiver(kind)(tmp_path) as (settings, _):
        bad = {**settings, "name": "has space"}
        with pytest.raises(ValidationError, match="name"):
            OUTPUTS.get(kind).Settings.model_validate(bad)
