"""How much a domain name looks machine-generated (DGA): a score 0-1 and a reason.

A bot with a domain generation algorithm queries many pseudo-random names a day, of
which its operator registered a few. What is generated is the *registered* label: the
label left of the public suffix (``uhbqolxf`` in ``www.uhbqolxf.org``, ``abc`` in
``abc.co.uk``), found with the Public Suffix List's ICANN rules (the copy bundled with
``publicsuffixlist``, looked up for a whole column at once by
:func:`flowhawk.dns.names.icann_registered_domains`: no network access). Subdomains are the owner's
choice and CDNs fill them with hashes, so they are not scored. Names under no ICANN
suffix (single labels such as a browser's random intranet probes, ``corp.lan``,
``host.local``) are not registrable and are left unscored, and so are internationalized
labels (``xn--``: their ASCII form is an encoding, not letters someone chose).

The model is a logistic regression over the character features of
:mod:`flowhawk.dns.dga_features` (trigram log-likelihood under ordinary names, vowel
share, consonant runs, digits, length, entropy, ...), standardized. Its parameters and
the trigram table live in :data:`MODEL_FILE`, written by ``eval/train_dga.py``:
scoring is numpy only. The shipped model was trained on MIT-licensed lists only:

* generated names: the sections of the maltrail trails (github.com/stamparm/maltrail,
  MIT) whose references are DGA feeds or reports (netlab 360 DGA feeds, DGAFeedAlerts,
  ...), plus whole families that are DGA output (listed in ``eval/train_dga.py``);
* ordinary names: maltrail's whitelist (MIT), the top-sites list (github.com/Kikobeats/
  top-sites, MIT) and the organisation labels of the Public Suffix List's private
  section (MPL-2.0, shipped with ``publicsuffixlist``).

Verdicts: ``dga`` from the model's ``dga`` threshold, ``suspicious`` from its
``suspicious`` threshold (both chosen in training as the scores 0.1 % and 1 % of
held-out ordinary names reach), else ``benign``; ``invalid`` for names that are not DNS
names and ``unscored`` for names with no registrable label. See eval/README.md for the
figures (per-family detection rates at 1 % false positives).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from flowhawk.dns.dga_features import FEATURES, K, features
from flowhawk.dns.names import icann_registered_domains

MODEL_FILE = Path(__file__).with_name("dga_model.npz")
VERDICTS = ("dga", "suspicious", "benign", "invalid", "unscored")
_NAME = r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$"
_NO_SUFFIX = "no registrable label under a public suffix (internal or single-label name)"


@dataclass(frozen=True)
class DgaModel:
    """Trigram tables and logistic-regression parameters (see the module docstring)."""

    table: np.ndarray  # float32 [K**3]: log P(c | a, b) for code (a*K + b)*K + c
    unigram: np.ndarray  # float32 [K]: log P(c)
    seen: np.ndarray  # bool [K**3]: trigrams present in the ordinary names
    mean: np.ndarray  # float64 [F]: feature standardization
    scale: np.ndarray  # float64 [F]
    coef: np.ndarray  # float64 [F]: weights of the standardized features
    intercept: float
    suspicious: float  # score from which a name is "suspicious"
    dga: float  # score from which a name is "dga"
    meta: dict[str, Any] = field(default_factory=dict)  # sources, licences, counts

    def save(self, path: Path) -> None:
        """Write the model as a compressed ``.npz`` (no pickles)."""
        np.savez_compressed(
            path,
            table=self.table.astype(np.float32),
            unigram=self.unigram.astype(np.float32),
            seen=np.packbits(self.seen),
            mean=self.mean,
            scale=self.scale,
            coef=self.coef,
            params=np.array([self.intercept, self.suspicious, self.dga]),
            features=np.array(FEATURES),
            meta=np.array(json.dumps(self.meta, sort_keys=True)),
        )

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> DgaModel:
        with np.load(path, allow_pickle=False) as z:
            if tuple(str(f) for f in z["features"]) != FEATURES:
                raise ValueError(f"{path}: model features differ from this version's")
            intercept, suspicious, dga = (float(x) for x in z["params"])
            return cls(
                table=z["table"].astype(np.float32),
                unigram=z["unigram"].astype(np.float32),
                seen=np.unpackbits(z["seen"])[: K**3].astype(bool),
                mean=z["mean"].astype(np.float64),
                scale=z["scale"].astype(np.float64),
                coef=z["coef"].astype(np.float64),
                intercept=intercept,
                suspicious=suspicious,
                dga=dga,
                meta=json.loads(str(z["meta"])),
            )

    def features(self, labels: pa.Array) -> np.ndarray:
        """The feature matrix of registered labels (rows × :data:`FEATURES`)."""
        return features(labels, self.table, self.unigram, self.seen)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Each feature's term of the logit (rows × features)."""
        return (x - self.mean) / self.scale * self.coef

    def score_features(self, x: np.ndarray) -> np.ndarray:
        """Scores 0-1 of feature rows."""
        w = self.coef / self.scale  # the standardization folded into the weights
        z = x @ w + (self.intercept - float(self.mean @ w))
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def score_labels(self, labels: pa.Array) -> np.ndarray:
        """Scores 0-1 of registered labels (``uhbqolxf``, not ``uhbqolxf.org``)."""
        return self.score_features(self.features(labels))


@cache
def shipped_model() -> DgaModel:
    """The model shipped with flowhawk (loaded once)."""
    return DgaModel.load(MODEL_FILE)


def split_names(names: pl.Series) -> pl.DataFrame:
    """Each name normalized and cut at its public suffix.

    Columns: ``domain`` (lower case, no trailing dot, IDNs in their ``xn--`` form),
    ``registered`` (registered domain), ``label`` (its leftmost label, what is scored),
    ``status`` (``ok``, ``invalid``, ``unscored``) and ``problem`` (why not ``ok``).
    Names are looked up once per distinct value.
    """
    s = names.cast(pl.String).str.strip_chars().str.to_lowercase()
    s = pl.Series("domain", s).str.strip_suffix(".")
    frame = pl.DataFrame({"domain": s})
    if frame.select(pl.col("domain").str.contains(r"[^\x00-\x7f]").any()).item():
        frame = frame.with_columns(domain=_punycode(frame.get_column("domain")))
    ok_chars = pl.col("domain").str.contains(_NAME)
    too_long = (pl.col("domain").str.len_bytes() > 253) | pl.col("domain").str.contains(r"[^.]{64}")
    frame = frame.with_columns(
        problem=pl.when(pl.col("domain").is_null())
        .then(pl.lit("empty or unreadable name"))
        .when(pl.col("domain") == "")
        .then(pl.lit("empty name"))
        .when(~ok_chars)
        .then(pl.lit("not a DNS name (letters, digits, '-', '_' and dots only)"))
        .when(too_long)
        .then(pl.lit("too long for DNS (63 per label, 253 in all)"))
    )
    frame = frame.with_columns(
        registered=pl.when(pl.col("problem").is_null()).then(
            icann_registered_domains(frame.get_column("domain"))
        )
    )
    idn = pl.col("registered").str.starts_with("xn--")
    return frame.select(
        "domain",
        "registered",
        label=pl.col("registered").str.split_exact(".", 1).struct.field("field_0"),
        status=pl.when(pl.col("problem").is_not_null())
        .then(pl.lit("invalid"))
        .when(pl.col("registered").is_null() | idn)
        .then(pl.lit("unscored"))
        .otherwise(pl.lit("ok")),
        problem=pl.coalesce(
            "problem",
            pl.when(pl.col("registered").is_null())
            .then(pl.lit(_NO_SUFFIX))
            .when(idn)
            .then(pl.lit("internationalized (xn--) label: not scored")),
        ),
    )


def _punycode(domains: pl.Series) -> pl.Series:
    """Non-ASCII names in their IDNA (``xn--``) form; null when they cannot be encoded."""

    def encode(name: str) -> str | None:
        try:
            return name.encode("idna").decode("ascii")
        except (UnicodeError, ValueError):
            return None

    distinct = domains.drop_nulls().unique()
    mapped = [n if n.isascii() else encode(n) for n in distinct.to_list()]
    return domains.replace_strict(distinct, mapped, default=None, return_dtype=pl.String)


def score_domains(names: pl.Series | list[str], model: DgaModel | None = None) -> np.ndarray:
    """DGA scores 0-1 of full names (NaN for invalid and unscored names)."""
    parts = split_names(pl.Series(names, dtype=pl.String))
    model = model or shipped_model()
    ok = (parts.get_column("status") == "ok").to_numpy()
    out = np.full(parts.height, np.nan)
    if ok.any():
        labels = parts.get_column("label").filter(pl.Series(ok)).to_arrow()
        out[ok] = model.score_labels(labels)
    return out


#: How each feature is told when it pushes a name towards "generated".
_PHRASES: dict[str, pl.Expr] = {}


def _phrases() -> dict[str, pl.Expr]:
    """Readable text per feature, as expressions over the ``f_*`` columns."""
    if _PHRASES:
        return _PHRASES

    def num(name: str, digits: int = 1) -> pl.Expr:
        return pl.col(f"f_{name}").round(digits).cast(pl.String)

    def count(name: str) -> pl.Expr:
        return pl.col(f"f_{name}").cast(pl.Int64).cast(pl.String)

    length = count("length")
    share = {k: (pl.col(f"f_{k}") * 100).round(0).cast(pl.Int64).cast(pl.String) for k in FEATURES}
    _PHRASES.update(
        {
            "ll3": pl.concat_str(
                [
                    pl.lit("letter sequences unlike real names ("),
                    num("ll3"),
                    pl.lit(" log-prob/char)"),
                ]
            ),
            "ll3_min": pl.concat_str(
                [pl.lit("a very unlikely letter sequence ("), num("ll3_min"), pl.lit(")")]
            ),
            "ll1": pl.concat_str([pl.lit("rare letters ("), num("ll1"), pl.lit(" log-prob/char)")]),
            "unseen": pl.concat_str([share["unseen"], pl.lit("% of letter triples never seen")]),
            "length": pl.concat_str([pl.lit("long ("), length, pl.lit(" chars)")]),
            "log_length": pl.concat_str([pl.lit("length "), length]),
            "digits": pl.concat_str([share["digits"], pl.lit("% digits")]),
            "switches": pl.concat_str([pl.lit("letters and digits interleaved")]),
            "vowels": pl.concat_str([pl.lit("few vowels ("), share["vowels"], pl.lit("%)")]),
            "cons_run": pl.concat_str([count("cons_run"), pl.lit(" consonants in a row")]),
            "hyphens": pl.concat_str([count("hyphens"), pl.lit(" hyphens")]),
            "entropy": pl.concat_str(
                [pl.lit("high character entropy ("), num("entropy"), pl.lit(" bits)")]
            ),
            "distinct": pl.concat_str([share["distinct"], pl.lit("% distinct characters")]),
        }
    )
    return _PHRASES


def explain_domains(names: pl.Series | list[str], model: DgaModel | None = None) -> pl.DataFrame:
    """Score, verdict and a readable reason per name (input order).

    Columns: ``domain``, ``registered``, ``label``, ``dga_score`` (null when not scored),
    ``verdict`` (:data:`VERDICTS`) and ``reason``: for a scored name the two features
    pushing it most towards "generated" with their values, or what made it unscorable.
    """
    model = model or shipped_model()
    parts = split_names(pl.Series(names, dtype=pl.String))
    ok = (parts.get_column("status") == "ok").to_numpy()
    n = parts.height
    x = np.zeros((n, len(FEATURES)))
    scores = np.full(n, np.nan)
    top = np.zeros((n, 2), dtype=np.int64)
    if ok.any():
        labels = parts.get_column("label").filter(pl.Series(ok)).to_arrow()
        fx = model.features(labels)
        x[ok] = fx
        contrib = model.contributions(fx)
        scores[ok] = model.score_features(fx)
        top[ok] = np.argsort(-contrib, axis=1, kind="stable")[:, :2]
    frame = parts.with_columns(
        dga_score=pl.Series(scores).fill_nan(None),
        _t1=pl.Series(top[:, 0]),
        _t2=pl.Series(top[:, 1]),
        **{f"f_{k}": pl.Series(x[:, i]) for i, k in enumerate(FEATURES)},
    )
    phrases = _phrases()

    def pick(col: str) -> pl.Expr:
        expr = pl.when(pl.col(col) == 0).then(phrases[FEATURES[0]])
        for i, k in enumerate(FEATURES[1:], start=1):
            expr = expr.when(pl.col(col) == i).then(phrases[k])
        return expr

    score = pl.col("dga_score")
    verdict = (
        pl.when(pl.col("status") != "ok")
        .then(pl.col("status"))
        .when(score >= model.dga)
        .then(pl.lit("dga"))
        .when(score >= model.suspicious)
        .then(pl.lit("suspicious"))
        .otherwise(pl.lit("benign"))
    )
    frame = frame.with_columns(verdict=verdict)
    label = pl.concat_str([pl.lit("label '"), pl.col("label"), pl.lit("'")])
    reason = (
        pl.when(pl.col("status") != "ok")
        .then(pl.col("problem"))
        .when(pl.col("verdict") == "benign")
        .then(
            pl.concat_str(
                [
                    label,
                    pl.lit(" reads like ordinary names ("),
                    pl.col("f_ll3").round(1).cast(pl.String),
                    pl.lit(" log-prob/char)"),
                ]
            )
        )
        .otherwise(pl.concat_str([label, pl.lit(": "), pick("_t1"), pl.lit("; "), pick("_t2")]))
    )
    return frame.select("domain", "registered", "label", "dga_score", "verdict", reason=reason)
