"""Loading: files, folders, URLs, names, settings and versions."""

from __future__ import annotations

import gzip
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from flowhawk.diagnostics import Diagnostics
from flowhawk.errors import InputError
from flowhawk.intel import FeedOptions, FeedSettings, IntelSettings, load, load_feeds

from .conftest import FIXTURES, NOW


@pytest.fixture
def feeds_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "feeds"
    shutil.copytree(FIXTURES, folder)
    (folder / "README.md").write_text("# Our feeds\nnot a feed\n")
    (folder / "LICENSE").write_text("MIT\n")
    (folder / ".hidden.txt").write_text("198.51.100.99\n")
    (folder / "notes.txt").write_text("Tue Feb 27 09:27:52 IST 2024\n")
    return folder


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local web server on 127.0.0.1 serving a folder."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_folder_loads_every_feed_and_passes_over_the_rest(feeds_dir: Path) -> None:
    diag = Diagnostics()
    feeds = load_feeds([feeds_dir], diagnostics=diag, now=NOW)
    assert [f.name for f in feeds] == [
        "custom_feed", "feodo", "misp_event", "misp_response", "plain_mixed", "stix_bundle",
        "threatfox", "zeek",
    ]  # fmt: skip
    assert [f.format for f in feeds] == [
        "csv", "csv", "misp", "misp", "plain", "stix", "csv", "zeek"
    ]  # fmt: skip
    notes = diag.stats(str(feeds_dir / "notes.txt"))
    assert "format not recognised" in notes.failed
    assert not any(
        "README" in name or "LICENSE" in name or "hidden" in name for name in diag.inputs
    )
    assert diag.stats(str(feeds_dir / "zeek.intel")).format == "intel-zeek"
    assert diag.stats(str(feeds_dir / "zeek.intel")).records == 12


def test_a_file_named_directly_must_be_readable(feeds_dir: Path) -> None:
    with pytest.raises(InputError, match=r"notes.txt: format not recognised"):
        load([feeds_dir / "notes.txt"])
    with pytest.raises(InputError, match=r"missing.txt: does not exist"):
        load([feeds_dir / "missing.txt"])
    (feeds_dir / "broken.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputError, match=r"broken.gz: damaged compressed data"):
        load([feeds_dir / "broken.gz"])


def test_versions_are_stable_and_follow_content(feeds_dir: Path) -> None:
    first = load([feeds_dir], now=NOW)
    again = load([feeds_dir])
    assert first.version == again.version
    assert first.feed_versions() == again.feed_versions()
    assert first.feeds[0].loaded_at == NOW != again.feeds[0].loaded_at
    with open(feeds_dir / "plain_mixed.txt", "a") as fh:
        fh.write("198.51.100.200\n")
    changed = load([feeds_dir])
    assert changed.version != first.version
    diff = {k for k, v in changed.feed_versions().items() if first.feed_versions()[k] != v}
    assert diff == {"plain_mixed"}
    reweighted = load([feeds_dir], IntelSettings(options={"zeek": FeedOptions(weight=0.5)}))
    assert reweighted.version not in (first.version, changed.version)


def test_compressed_feed_equals_plain(feeds_dir: Path, tmp_path: Path) -> None:
    packed = tmp_path / "plain_mixed.txt.gz"
    packed.write_bytes(gzip.compress((feeds_dir / "plain_mixed.txt").read_bytes()))
    plain, gz = load_feeds([feeds_dir / "plain_mixed.txt", packed], now=NOW)
    assert gz.name == "plain_mixed~2", "the same stem twice"
    assert gz.version == plain.version
    assert_frame_equal(gz.indicators, plain.indicators)


def test_url_fetch_equals_file_load(feeds_dir: Path, http_root: tuple[str, Path]) -> None:
    base, root = http_root
    for name in ("stix_bundle.json", "threatfox.csv", "plain_mixed.txt"):
        shutil.copy(feeds_dir / name, root / name)
    urls = [f"{base}/{n}" for n in ("stix_bundle.json", "threatfox.csv", "plain_mixed.txt")]
    files = [feeds_dir / n for n in ("stix_bundle.json", "threatfox.csv", "plain_mixed.txt")]
    by_url = load(urls, now=NOW)
    by_file = load(files, now=NOW)
    assert by_url.version == by_file.version
    assert [f.origin for f in by_url.feeds] == urls
    assert_frame_equal(by_url.indicators, by_file.indicators)
    assert_frame_equal(by_url.evidence, by_file.evidence)
    with pytest.raises(InputError, match=r"/absent.txt: cannot be fetched: HTTP 404"):
        load([f"{base}/absent.txt"])
    with pytest.raises(InputError, match=r"larger than max_download_bytes"):
        load([urls[0]], IntelSettings(max_download_bytes=100))


def test_unreachable_url_raises_naming_it() -> None:
    with pytest.raises(InputError, match=r"http://127.0.0.1:9/feed.txt: cannot be fetched"):
        load(["http://127.0.0.1:9/feed.txt"], IntelSettings(fetch_timeout=2))


def test_settings_name_weigh_and_categorize_feeds(feeds_dir: Path) -> None:
    settings = IntelSettings(
        options={
            "plain*": FeedOptions(category="scanner", weight=0.5),
            "plain_mixed": FeedOptions(weight=2.0),
        }
    )
    feeds = load_feeds(
        [
            feeds_dir / "plain_mixed.txt",
            FeedSettings(source=str(feeds_dir / "feodo.csv"), name="feodo-c2", category="c2"),
            FeedSettings(source=str(feeds_dir / "custom_feed.tsv"), format="plain"),
        ],
        settings,
    )
    plain, feodo, custom = feeds
    assert (plain.category, plain.options.weight) == ("scanner", 2.0), "later layers override"
    assert plain.options.half_life == settings.half_life
    assert (feodo.name, feodo.category, feodo.format) == ("feodo-c2", "c2", "csv")
    assert custom.format == "plain"
    intel = load([FeedSettings(source=str(feeds_dir / "feodo.csv"), category="botnet")])
    assert set(intel.evidence.get_column("category")) == {"botnet"}


def test_feed_categories_are_guessed_from_names(tmp_path: Path) -> None:
    for name in ("tor-exit-nodes.lst", "cobaltstrike_ips.txt", "blocklist.txt"):
        (tmp_path / name).write_text("198.51.100.1\n")
    feeds = load_feeds([tmp_path])
    assert {f.name: f.category for f in feeds} == {
        "blocklist": "malicious",
        "cobaltstrike_ips": "c2",
        "tor-exit-nodes": "tor",
    }


def test_maltrail_folder_names_and_labels(intel_data: Path, tmp_path: Path) -> None:
    trails = intel_data / "maltrail" / "trails_static"
    for rel in ("malware/conficker.txt", "malicious/brc4.txt", "suspicious/onion.txt",
                "mass_scanner_cidr.txt"):  # fmt: skip
        (tmp_path / "trails" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(trails / rel, tmp_path / "trails" / rel)
    intel = load([FeedSettings(source=str(tmp_path / "trails"), name="maltrail")], now=NOW)
    assert {f.name: f.category for f in intel.feeds} == {
        "maltrail/malicious/brc4": "c2",  # Brute Ratel, a C2 framework
        "maltrail/malware/conficker": "malware",
        "maltrail/suspicious/onion": "suspicious",
        "maltrail/trails/mass_scanner_cidr": "scanner",
    }
    families = set(intel.evidence.get_column("family"))
    assert {"conficker", "brc4", "onion", "mass_scanner_cidr"} <= families
    hit = intel.lookup_domains(pl.Series(["www.agiwjyx.biz"])).row(0, named=True)
    assert hit["indicator"] is not None
    assert intel.explain(hit["indicator"]).get_column("category").to_list() == ["malware"]
    assert set(intel.explain(hit["indicator"]).get_column("family")) == {"conficker"}
