"""Configuration: defaults, strict keys, durations, detector settings, show/check."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowhawk import config
from flowhawk.errors import ConfigError


def test_defaults_are_rfc1918_and_ula():
    cfg = config.load(None)
    assert cfg.network.internal == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
    assert cfg.learning.period == 3600
    assert cfg.events.window == 3600


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800), (42, 42), ("2.5h", 9000)],
)
def test_durations(text, seconds):
    assert config.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["abc", "-1h", True, "5 parsecs"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        config.parse_duration(bad)


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[network]\ninternl = ["10.0.0.0/8"]\n')
    with pytest.raises(ConfigError, match=r"c\.toml.*unknown key 'network\.internl'"):
        config.load(path)


def test_unknown_detector_and_detector_key():
    with pytest.raises(ConfigError, match="unknown detector 'M99'"):
        config.from_dict({"detectors": {"M99": {}}})
    with pytest.raises(ConfigError, match=r"\[detectors\.M1\] unknown key 'wieght'"):
        config.from_dict({"detectors": {"M1": {"wieght": 3}}})


def test_bad_values_named():
    with pytest.raises(ConfigError) as exc:
        config.from_dict({"network": {"internal": ["10.0.0.0/33"]}, "learning": {"period": "x"}})
    assert "network.internal" in str(exc.value) and "learning.period" in str(exc.value)


def test_invalid_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[network\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_sites_groups_and_detector_settings(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        """
[learning]
period = "2h"
[[sites]]
name = "hq"
exporters = ["192.0.2.1"]
networks = ["10.1.0.0/16"]
[[host_groups]]
name = "db"
networks = ["10.1.5.7"]
guarded = true
[detectors.M1]
enabled = false
weight = 10
"""
    )
    cfg = config.load(path)
    assert cfg.learning.period == 7200
    assert cfg.sites[0].networks == ["10.1.0.0/16"]
    assert cfg.host_groups[0].networks == ["10.1.5.7/32"]
    assert cfg.detectors["M1"]["enabled"] is False and cfg.detectors["M1"]["weight"] == 10


def test_effective_lists_every_detector_with_defaults():
    eff = config.effective(config.load(None))
    assert set(eff["detectors"]) >= {"M1", "M30", "M31"}
    assert eff["learning"]["period"] == "1h"
    assert eff["detectors"]["M30"]["weight"] == 60.0


def test_intel_section_defaults_strictness_and_show(tmp_path):
    from flowhawk.intel import FeedSettings, IntelSettings

    assert config.load(None).intel == IntelSettings()
    assert config.load(None).intel.feeds == []
    path = tmp_path / "intel.toml"
    path.write_text(
        '[intel]\nhalf_life = "7d"\n[[intel.feeds]]\nsource = "feeds/c2.txt"\n'
        'name = "c2"\nweight = 2\ncategory = "c2"\nmax_age = "30d"\n'
    )
    cfg = config.load(path)
    assert cfg.intel.half_life == 7 * 86400
    assert cfg.intel.feeds == [
        FeedSettings(
            source=str(tmp_path / "feeds/c2.txt"),  # relative to the config file
            name="c2",
            weight=2,
            category="c2",
            max_age=2592000,
        )
    ]
    shown = config.effective(cfg)["intel"]
    assert shown["half_life"] == "7d" and shown["feeds"][0]["max_age"] == "30d"
    with pytest.raises(ConfigError, match=r"unknown key 'intel\.feeds\.0\.wieght'"):
        config.from_dict({"intel": {"feeds": [{"source": "x", "wieght": 2}]}})
    with pytest.raises(ConfigError, match=r"intel\.feeds\.0\.category"):
        config.from_dict({"intel": {"feeds": [{"source": "x", "category": "evil"}]}})


def test_context_section_and_paths_relative_to_the_config_file(tmp_path):
    assert config.load(None).context.hops_min_risk == 50.0
    path = tmp_path / "ctx.toml"
    path.write_text(
        '[context]\nhops_window = "30m"\nrelay_delay = "2s"\n'
        'geoip = ["geo/City.mmdb", "/abs/ASN.mmdb"]\n'
        '[[intel.feeds]]\nsource = "https://feeds.example/c2.txt"\n'
    )
    cfg = config.load(path)
    assert cfg.context.hops_window == 1800 and cfg.context.relay_delay == 2
    assert cfg.context.geoip == [tmp_path / "geo/City.mmdb", Path("/abs/ASN.mmdb")]
    assert cfg.intel.feeds[0].source == "https://feeds.example/c2.txt"
    assert config.effective(cfg)["context"]["hops_window"] == "30m"
    with pytest.raises(ConfigError, match=r"unknown key 'context\.hop_window'"):
        config.from_dict({"context": {"hop_window": "1h"}})
