"""``flowhawk domains score``: CSV for analysts, bad names reported, never a crash."""

from __future__ import annotations

import io

import polars as pl
from typer.testing import CliRunner

from flowhawk.cli import app

runner = CliRunner()


def _csv(text: str) -> pl.DataFrame:
    return pl.read_csv(io.StringIO(text), infer_schema=False)


def test_scores_a_file_in_order_skipping_blanks_and_comments(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("# analyst list\ngoogle.com\n\n  uhbqolxf.org  \nWWW.BBC.CO.UK.\nhost.local\n")
    res = runner.invoke(app, ["domains", "score", str(path)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0] == "domain,dga_score,verdict,reason"
    df = _csv(res.stdout)
    assert df.get_column("domain").to_list() == [
        "google.com", "uhbqolxf.org", "WWW.BBC.CO.UK.", "host.local",
    ]  # fmt: skip
    assert df.get_column("verdict").to_list() == ["benign", "dga", "benign", "unscored"]
    assert 0.9 < float(df.item(1, "dga_score")) <= 1.0
    assert df.item(3, "dga_score") is None


def test_reads_stdin():
    res = runner.invoke(app, ["domains", "score", "-"], input="gllcsbqrbfch.com\n")
    assert res.exit_code == 0
    assert _csv(res.stdout).item(0, "verdict") in ("dga", "suspicious")


def test_bad_names_are_kept_with_an_empty_score_and_counted(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok.com\na..b\nfoo, bar.com\n\xff\xfe.com\n")
    res = runner.invoke(app, ["domains", "score", str(path)])
    assert res.exit_code == 3
    df = _csv(res.stdout)
    assert df.height == 4
    assert df.get_column("verdict").to_list() == ["benign", "invalid", "invalid", "invalid"]
    assert df.get_column("dga_score").null_count() == 3
    assert "3 invalid name(s)" in res.stderr and "line 2: 'a..b'" in res.stderr


def test_unreadable_input_is_a_clear_error(tmp_path):
    res = runner.invoke(app, ["domains", "score", str(tmp_path / "missing.txt")])
    assert res.exit_code == 1
    assert "cannot read" in res.stderr and "missing.txt" in res.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    res = runner.invoke(app, ["domains", "score", str(empty)])
    assert res.exit_code == 0 and res.stdout.strip() == "domain,dga_score,verdict,reason"
