"""An OpenAPI-driven fuzz run (schemathesis) against a running ``flowhawk serve``: every
operation, with generated valid and invalid inputs, must never answer a server error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve.conftest import SITES_TOML, fill, two_site_config
from tests.serve.process import Served

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.mark.slow
@pytest.mark.skipif(not SCHEMATHESIS.exists() and not shutil.which("schemathesis"),
                    reason="schemathesis is a development dependency")  # fmt: skip
def test_fuzzing_the_api_finds_no_server_errors(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    fill(data, two_site_config())
    config = {
        **SITES_TOML,
        "collect": {"listen": ["127.0.0.1:0"]},
        "serve": {"listen": "127.0.0.1:0"},
    }
    served = Served(config, data).start()
    try:
        run = subprocess.run(
            [
                str(SCHEMATHESIS if SCHEMATHESIS.exists() else shutil.which("schemathesis")),
                "run", f"{served.url}/api/v1/openapi.json",
                "-H", f"Authorization: Bearer {served.token}",
                "--checks", "not_a_server_error",
                "--max-examples", "10", "--seed", "20261122", "--workers", "1",
                "--exclude-path", "/api/v1/events/stream",  # endless by design
                "--exclude-path", "/api/v1/logout",  # would end the fuzzer's own session
                "--request-timeout", "30", "--max-time", "90",
                "--warnings", "off", "--no-color",
            ],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
    finally:
        served.stop()
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "passed" in run.stdout.lower(), report
