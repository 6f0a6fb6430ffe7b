"""The DGA classifier: label features, the registered label, scores and reasons."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from flowhawk.dns.dga import (
    MODEL_FILE,
    DgaModel,
    explain_domains,
    score_domains,
    shipped_model,
    split_names,
)
from flowhawk.dns.dga_features import FEATURES, features, trigram_counts, trigram_table

ORDINARY = ["google.com", "wikipedia.org", "www.bbc.co.uk", "github.com", "amazon.de", "yahoo.jp"]
GENERATED = ["uhbqolxf.org", "gllcsbqrbfch.com", "ofdhiydrrttpblp.com", "xkqzjwvbtrnmfd.net"]


def test_features_are_computed_per_label_and_match_one_at_a_time():
    tri, uni = trigram_counts(pa.array(["google", "facebook", "amazon", "wikipedia"]))
    table, unigram = trigram_table(tri, uni)
    labels = pa.array(["google", "uhbqolxf", "a1b2", "", None, "x" * 80, "ab-cd"])
    x = features(labels, table, unigram, tri > 0)
    assert x.shape == (7, len(FEATURES)) and np.isfinite(x).all()
    one = np.vstack([features(pa.array([v]), table, unigram, tri > 0) for v in labels.to_pylist()])
    assert np.allclose(x, one)
    f = dict(zip(FEATURES, x[1], strict=True))  # uhbqolxf
    assert f["length"] == 8 and f["cons_run"] == 3 and f["vowels"] == 0.25 and f["entropy"] == 3
    g = dict(zip(FEATURES, x[0], strict=True))  # google: seen trigrams, likelier
    assert g["unseen"] == 0 and g["ll3"] > f["ll3"]
    assert dict(zip(FEATURES, x[2], strict=True))["digits"] == 0.5
    assert x[3].sum() == 0 and x[4].sum() == 0  # empty and null labels
    assert dict(zip(FEATURES, x[5], strict=True))["length"] == 63  # cut at a DNS label's size
    assert dict(zip(FEATURES, x[6], strict=True))["hyphens"] == 1


def test_split_names_normalizes_and_flags_what_cannot_be_scored():
    parts = split_names(
        pl.Series(["WWW.Example.COM.", " a..b ", "", None, "x" * 64 + ".com", "büch.de",
                   "host", "pc.corp.lan", "abc.xn--p1ai", "under_score.com"])
    )  # fmt: skip
    assert parts.get_column("domain")[0] == "www.example.com"
    assert parts.get_column("label")[0] == "example"
    assert parts.get_column("status").to_list() == [
        "ok", "invalid", "invalid", "invalid", "invalid", "unscored", "unscored", "unscored",
        "ok", "ok",
    ]  # fmt: skip
    assert parts.get_column("domain")[5].startswith("xn--")  # an IDN, left unscored
    assert parts.filter(pl.col("status") != "ok").get_column("problem").null_count() == 0


def test_generated_names_score_above_ordinary_ones():
    s = score_domains(ORDINARY + GENERATED)
    model = shipped_model()
    assert (s[: len(ORDINARY)] < model.suspicious).all()
    assert (s[len(ORDINARY) :] >= model.suspicious).all()
    assert np.isnan(score_domains(["a..b", "localhost"])).all()
    assert score_domains([]).shape == (0,)


def test_explanations_give_verdicts_and_readable_reasons():
    out = explain_domains(["uhbqolxf.org", "google.com", "a b.com", "printer.local"])
    assert out.columns == ["domain", "registered", "label", "dga_score", "verdict", "reason"]
    assert out.get_column("verdict").to_list() == ["dga", "benign", "invalid", "unscored"]
    reason = out.get_column("reason").to_list()
    assert reason[0].startswith("label 'uhbqolxf': ") and "; " in reason[0]
    assert "ordinary" in reason[1]
    assert "not a DNS name" in reason[2] and "public suffix" in reason[3]
    assert out.get_column("dga_score").null_count() == 2


def test_the_shipped_model_round_trips_and_records_its_sources(tmp_path):
    model = DgaModel.load(MODEL_FILE)
    assert 0 < model.suspicious <= model.dga < 1
    assert "MIT" in model.meta["sources"]["generated"]
    path = tmp_path / "m.npz"
    model.save(path)
    again = DgaModel.load(path)
    labels = pa.array(["uhbqolxf", "google"])
    assert np.array_equal(again.score_labels(labels), model.score_labels(labels))


@pytest.mark.parametrize("family", ["conficker", "cryptolocker", "ramdo", "tinba"])
def test_real_dga_lists_are_mostly_flagged(shared_data, family):
    path = shared_data / "dns/dga_andrewaeva/1000domains" / f"{family}_1000.txt"
    names = [n.strip() for n in path.read_text().splitlines() if n.strip()]
    benign = (shared_data / "dns/dga_andrewaeva/1000domains/alexa_1000.txt").read_text().split()
    s, b = score_domains(names), score_domains(benign)
    model = shipped_model()
    assert np.nanmean(b >= model.dga) < 0.02
    assert np.nanmean(s >= model.suspicious) > 0.4
