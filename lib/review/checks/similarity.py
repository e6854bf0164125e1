"""Similarity of baseline and candidate answers, and a word-level diff for reading them side by side.

Similarity is rapidfuzz's `fuzz.ratio` (normalized Indel similarity over characters) scaled to [0, 1].
It is symmetric, order-sensitive and counts every inserted or deleted character, so a candidate
that drops half of its answer, reorders steps or changes formatting scores lower. `token_set_ratio`
was rejected: it scores 1.0 whenever one answer's word set contains the other's, which hides
truncation, the regression reviewers most need to see. Texts are compared as-is (no case or
whitespace folding): a formatting change is a change. NA where either side is missing.

The diff tokenizes into words, single punctuation marks and whitespace runs, aligns the token lists
with rapidfuzz's Levenshtein opcodes and joins tokens back, so the pieces reconstruct both texts
exactly. `diff_html` escapes every piece (model output is untrusted) before adding markup.
"""
from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")

DiffOp = tuple[str, str, str]  # (equal | replace | delete | insert, baseline text, candidate text)


def similarity(baseline: pd.Series, candidate: pd.Series) -> pd.Series:
    """Pairwise similarity in [0, 1] (Float64), NA where either output is missing."""
    both = baseline.notna() & candidate.notna()
    out = pd.Series(pd.NA, index=baseline.index, dtype="Float64")
    if both.any():
        scores = process.cpdist(baseline[both].astype(str).tolist(), candidate[both].astype(str).tolist(),
                                scorer=fuzz.ratio, workers=-1, dtype=np.float64)
        out[both] = scores / 100.0
    return out


def word_diff(a: str, b: str) -> list[DiffOp]:
    """Word-level diff; joining the a-texts gives `a` and joining the b-texts gives `b`, exactly."""
    a_tokens, b_tokens = _TOKEN.findall(a), _TOKEN.findall(b)
    ops = [
        (op.tag, "".join(a_tokens[op.src_start:op.src_end]), "".join(b_tokens[op.dest_start:op.dest_end]))
        for op in Levenshtein.opcodes(a_tokens, b_tokens)
    ]
    return _merge_whitespace_gaps(ops)


def _merge_whitespace_gaps(ops: list[DiffOp]) -> list[DiffOp]:
    """Join neighbouring changes, also across a whitespace-only equal gap: "a b" -> "x y" is one change."""
    merged: list[DiffOp] = []
    for op in ops:
        if op[0] != "equal" and merged and merged[-1][0] != "equal":
            prev = merged.pop()
            op = _change(prev[1] + op[1], prev[2] + op[2])
        elif (op[0] != "equal" and len(merged) >= 2 and merged[-1][1].isspace()
              and merged[-2][0] != "equal"):
            gap, prev = merged.pop(), merged.pop()
            op = _change(prev[1] + gap[1] + op[1], prev[2] + gap[2] + op[2])
        merged.append(op)
    return merged


def _change(a_text: str, b_text: str) -> DiffOp:
    tag = "replace" if a_text and b_text else ("delete" if a_text else "insert")
    return tag, a_text, b_text


def diff_html(a: str, b: str) -> tuple[str, str]:
    """Two HTML fragments (baseline, candidate): removed text in <del>, added text in <ins>."""
    left, right = [], []
    for tag, a_text, b_text in word_diff(a, b):
        a_safe, b_safe = html.escape(a_text), html.escape(b_text)  # escape first, then add markup
        if tag == "equal":
            left.append(a_safe)
            right.append(b_safe)
            continue
        if a_safe:
            left.append(f'<del class="diff-del">{a_safe}</del>')
        if b_safe:
            right.append(f'<ins class="diff-ins">{b_safe}</ins>')
    return "".join(left), "".join(right)
