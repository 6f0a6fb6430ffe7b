"""Character features of domain labels, computed for a whole array of labels at once.

A domain generation algorithm (DGA) draws the label a bot registers (``uhbqolxf`` in
``uhbqolxf.org``) from a pseudo-random stream: its letters follow each other in ways
people's names rarely do, vowels are few, consonants pile up, digits mix with letters.
Word-list DGAs (``scoreadmireluckapplyfitcouple.com``) read like words but are long.

Labels are encoded once into a single symbol stream (no Python object per label): each
label becomes ``0 0 c1 .. cn`` followed by the next one, where ``0`` is the boundary
symbol and ``c`` the symbols of :data:`ALPHABET` (a-z, 0-9, ``-``, ``_``: ``K = 39``
symbols with the boundary). Per-label sums, minima and maxima are ``bincount`` /
``reduceat`` over that stream, so the cost is a few passes over the characters.

Features (:data:`FEATURES`, one column each):

* ``ll3``: mean log-probability per symbol under a character trigram model learned from
  ordinary names (each character and the end of the label predicted from the two
  before it; :func:`trigram_table` builds it with interpolated smoothing);
* ``ll3_min``: the least likely transition of the label (one impossible sequence);
* ``ll1``: mean log-probability of the characters alone (rare letters such as q, x, z);
* ``unseen``: share of trigrams never seen in the ordinary names;
* ``length`` (characters, capped at 63) and ``log_length``;
* ``digits``: share of digits; ``switches``: letter/digit alternations per character;
* ``vowels``: share of vowels (a e i o u y) among letters (0.5 for a label of digits);
* ``cons_run``: the longest run of consonants;
* ``hyphens``: the number of hyphens;
* ``entropy``: Shannon entropy of the label's characters in bits; ``distinct``: share
  of distinct characters.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-_"
#: Symbols with the boundary (0): a-z = 1-26, 0-9 = 27-36, '-' = 37, '_' = 38.
K = len(ALPHABET) + 1
FEATURES = (
    "ll3",
    "ll3_min",
    "ll1",
    "unseen",
    "length",
    "log_length",
    "digits",
    "switches",
    "vowels",
    "cons_run",
    "hyphens",
    "entropy",
    "distinct",
)
#: Labels longer than this are cut (a DNS label has at most 63 characters).
MAX_LABEL = 63

_SYMBOL = np.zeros(256, dtype=np.uint8)
for _i, _c in enumerate(ALPHABET):
    _SYMBOL[ord(_c)] = _i + 1
_DIGIT = np.zeros(K, dtype=bool)
_DIGIT[27:37] = True
_LETTER = np.zeros(K, dtype=bool)
_LETTER[1:27] = True
_VOWEL = np.zeros(K, dtype=bool)
for _c in "aeiouy":
    _VOWEL[ALPHABET.index(_c) + 1] = True
_CONSONANT = _LETTER & ~_VOWEL
#: Labels per block of :func:`features` (a block's arrays stay in the processor's cache).
BLOCK = 1 << 13


class Stream:
    """Labels as one symbol stream (see the module docstring)."""

    def __init__(self, labels: pa.Array | pa.ChunkedArray):
        if isinstance(labels, pa.ChunkedArray):
            labels = labels.combine_chunks() if labels.num_chunks else pa.array([], pa.string())
        labels = labels.cast(pa.large_string()).fill_null("")
        n = len(labels)
        offsets = np.frombuffer(labels.buffers()[1], dtype=np.int64)[
            labels.offset : labels.offset + n + 1
        ]
        raw = labels.buffers()[2]
        data = (
            np.frombuffer(raw, dtype=np.uint8)[offsets[0] : offsets[-1]]
            if raw is not None
            else np.zeros(0, np.uint8)
        )
        lens = np.diff(offsets)
        if len(lens) and lens.max() > MAX_LABEL:  # cut overlong labels
            keep = np.arange(len(data)) - np.repeat(offsets[:-1] - offsets[0], lens)
            keep = keep < MAX_LABEL
            data = data[keep]
            lens = np.minimum(lens, MAX_LABEL)
        self.n = n
        self.lens = lens.astype(np.int64)
        owner = np.repeat(np.arange(n, dtype=np.int32), self.lens)
        self.owner = owner  # label of each character
        self.pos = np.arange(2, len(data) + 2, dtype=np.int32) + 2 * owner  # place in stream
        stream = np.zeros(len(data) + 2 * n + 2, dtype=np.int32)
        stream[self.pos] = _SYMBOL[data]
        self.stream = stream
        self.start = np.cumsum(self.lens) - self.lens  # each label's first character index

    def predicted(self) -> tuple[np.ndarray, np.ndarray]:
        """Stream positions the trigram model predicts (every character and each label's
        end) and their label, grouped by label in order."""
        # label k's predictions are stream positions start_k + 2k + 2 .. + lens_k (its end)
        owners = np.repeat(np.arange(self.n, dtype=np.int32), self.lens + 1)
        positions = np.arange(2, len(owners) + 2, dtype=np.int32) + owners
        return positions, owners

    def trigram_codes(self, positions: np.ndarray) -> np.ndarray:
        s = self.stream
        return (s[positions - 2] * K + s[positions - 1]) * K + s[positions]


def trigram_counts(labels: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Counts of every trigram (``K**3``, context and predicted symbol) and of every
    symbol (``K``) in ``labels``: what :func:`trigram_table` learns from."""
    st = Stream(labels)
    positions, _ = st.predicted()
    tri = np.bincount(st.trigram_codes(positions), minlength=K**3).astype(np.float64)
    uni = np.bincount(st.stream[st.pos], minlength=K).astype(np.float64)
    return tri, uni


def trigram_table(
    tri: np.ndarray, uni: np.ndarray, weights: tuple[float, float, float] = (0.6, 0.3, 0.1)
) -> tuple[np.ndarray, np.ndarray]:
    """Log-probability tables from counts: ``log P(c | a, b)`` for every code
    ``(a*K + b)*K + c`` as an interpolation of the trigram, bigram and unigram
    estimates (add-one smoothed, ``weights`` in that order), and ``log P(c)``."""
    t = tri.reshape(K, K, K) + 1.0
    p3 = t / t.sum(axis=2, keepdims=True)
    b = tri.reshape(K, K, K).sum(axis=0) + 1.0  # (b, c)
    p2 = b / b.sum(axis=1, keepdims=True)
    u = uni + 1.0
    u[0] = tri.reshape(K, K, K)[:, :, 0].sum() + 1.0  # label ends
    p1 = u / u.sum()
    w3, w2, w1 = weights
    p = w3 * p3 + w2 * p2[None, :, :] + w1 * p1[None, None, :]
    table = np.log(p).reshape(-1).astype(np.float32)
    unigram = np.log((uni + 1.0) / (uni.sum() + K)).astype(np.float32)
    return table, unigram


def features(
    labels: pa.Array | pa.ChunkedArray, table: np.ndarray, unigram: np.ndarray, seen: np.ndarray
) -> np.ndarray:
    """The :data:`FEATURES` of every label as a float64 matrix (labels × features).

    ``table`` and ``unigram`` come from :func:`trigram_table`; ``seen`` marks the
    trigram codes present in the ordinary names. Empty labels give zero rows. Labels
    are processed in blocks of :data:`BLOCK` so every intermediate array stays in the
    processor's cache.
    """
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks() if labels.num_chunks else pa.array([], pa.string())
    n = len(labels)
    if n <= BLOCK:
        return _block(labels, table, unigram, seen)
    out = np.empty((n, len(FEATURES)), dtype=np.float64)
    for lo in range(0, n, BLOCK):
        out[lo : lo + BLOCK] = _block(labels.slice(lo, BLOCK), table, unigram, seen)
    return out


def _block(
    labels: pa.Array, table: np.ndarray, unigram: np.ndarray, seen: np.ndarray
) -> np.ndarray:
    st = Stream(labels)
    n = st.n
    out = np.zeros((n, len(FEATURES)), dtype=np.float64)
    if n == 0:
        return out
    lens = st.lens.astype(np.float64)
    safe = np.maximum(lens, 1.0)
    has = st.lens > 0
    positions, owners = st.predicted()
    codes = st.trigram_codes(positions)
    ll = table[codes].astype(np.float64)
    npred = lens + 1.0
    out[:, 0] = np.bincount(owners, weights=ll, minlength=n) / npred
    bounds = np.cumsum(st.lens + 1) - (st.lens + 1)  # each label's first prediction
    out[:, 1] = np.minimum.reduceat(ll, bounds) if len(ll) else 0.0
    out[:, 3] = np.bincount(owners, weights=~seen[codes], minlength=n) / npred
    sym = st.stream[st.pos]
    out[:, 2] = np.bincount(st.owner, weights=unigram[sym], minlength=n) / safe
    out[:, 4] = lens
    out[:, 5] = np.log(safe)
    digit = _DIGIT[sym]
    out[:, 6] = np.bincount(st.owner, weights=digit, minlength=n) / safe
    letter = _LETTER[sym]
    prev = st.stream[st.pos - 1]
    switch = (digit & _LETTER[prev]) | (letter & _DIGIT[prev])
    out[:, 7] = np.bincount(st.owner, weights=switch, minlength=n) / safe
    letters = np.bincount(st.owner, weights=letter, minlength=n)
    vowels = np.bincount(st.owner, weights=_VOWEL[sym], minlength=n)
    out[:, 8] = np.where(letters > 0, vowels / np.maximum(letters, 1.0), 0.5)
    out[:, 9] = _longest_runs(st, _CONSONANT[st.stream])
    out[:, 10] = np.bincount(st.owner, weights=sym == 37, minlength=n)
    out[:, 11], out[:, 12] = _entropy_distinct(st, sym)
    out[~has] = 0.0
    return out


def _longest_runs(st: Stream, mask: np.ndarray) -> np.ndarray:
    """The longest run of ``mask`` symbols within each label (boundaries break runs)."""
    run = np.cumsum(mask, dtype=np.int32)
    reset = np.maximum.accumulate(np.where(mask, 0, run))
    length = (run - reset)[st.pos]
    out = np.zeros(st.n, dtype=np.float64)
    has = st.lens > 0
    if has.any():
        out[has] = np.maximum.reduceat(length, st.start[has])
    return out


_CLOGC = np.zeros(MAX_LABEL + 2, dtype=np.float64)
_CLOGC[1:] = np.arange(1, MAX_LABEL + 2) * np.log2(np.arange(1, MAX_LABEL + 2))


def _entropy_distinct(st: Stream, sym: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Character entropy (bits) and share of distinct characters of each label, from a
    per-label histogram (labels × symbols)."""
    counts = np.bincount(st.owner * K + sym, minlength=st.n * K).reshape(st.n, K)
    safe = np.maximum(st.lens, 1).astype(np.float64)
    entropy = np.log2(safe) - _CLOGC[counts].sum(axis=1) / safe
    distinct = (counts > 0).sum(axis=1) / safe
    return entropy, distinct
