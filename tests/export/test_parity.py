"""The parity metrics and bounds: exact on constructed embeddings, overridable, and strict."""
from __future__ import annotations

import numpy as np
import pytest

from splip_engine.errors import SpLIPError
from splip_engine.export import parity


def _unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_identical_embeddings_pass_every_bound():
    emb = _unit(np.random.default_rng(0).standard_normal((40, 16)))
    report = parity.compare(emb, emb.copy(), {"max_abs_diff": 0.0, "min_cosine": 1.0 - 1e-6, "top10_agreement": 1.0})
    assert report["passed"] and report["failed"] == []
    assert report["max_abs_diff"] == 0.0 and report["top10_agreement"] == 1.0


def test_a_moved_embedding_fails_naming_the_metric():
    emb = _unit(np.random.default_rng(0).standard_normal((40, 16)))
    moved = emb.copy()
    moved[3] = _unit([moved[3] + 0.1 * np.ones(16)])[0]
    report = parity.compare(emb, moved, parity.resolve_thresholds("fp32"))
    assert not report["passed"]
    assert report["failed"][0].startswith("max_abs_diff ") and "> 0.0001" in report["failed"][0]


def test_top_k_agreement_counts_shared_neighbours():
    gallery = np.eye(20, dtype=np.float32)  # query i (a row of ranks) scores gallery rows by rank
    ranks = np.arange(20, 0, -1, dtype=np.float32)
    reference = np.vstack([ranks, gallery])  # one query: its top-10 are gallery rows 0..9
    swapped = ranks.copy()
    swapped[[9, 10]] = swapped[[10, 9]]  # rows 9 and 10 trade places across the top-10 cut
    candidate = np.vstack([swapped, gallery])
    assert parity.top_k_agreement(reference, candidate, n_queries=1, k=10) == pytest.approx(0.9)


def test_a_swap_of_near_tied_neighbours_at_the_cut_is_agreement():
    gallery = np.eye(20, dtype=np.float32)
    scores = np.linspace(0.9, 0.5, 20, dtype=np.float32)
    scores[10] = scores[9] - parity.TIE_TOLERANCE / 2  # rows 9 and 10 are tied within fp16 rounding
    reference = np.vstack([scores, gallery])
    swapped = scores.copy()
    swapped[[9, 10]] = swapped[[10, 9]]
    assert parity.top_k_agreement(reference, np.vstack([swapped, gallery]), n_queries=1, k=10) == 1.0
    scores[10] = scores[9] - 10 * parity.TIE_TOLERANCE  # a real gap: the swap is a wrong neighbour
    swapped = scores.copy()
    swapped[[9, 10]] = swapped[[10, 9]]
    candidate = np.vstack([swapped, gallery])
    assert parity.top_k_agreement(np.vstack([scores, gallery]), candidate, n_queries=1, k=10) == pytest.approx(0.9)


SPECIFIED_BOUNDS = {  # written out here, not read from the table under test (ENGINE.md's export rules)
    "fp32": {"max_abs_diff": 1e-4},
    "fp16": {"min_cosine": 0.999, "top10_agreement": 1.0},  # "min cosine >= 0.999 ... and identical top-10"
    "int8": {"top10_agreement": 0.9},  # "top-10 agreement >= 0.9 against fp32"
    "bf16": {"min_cosine": 0.999, "top10_agreement": 0.95},
}


@pytest.mark.parametrize("precision", sorted(SPECIFIED_BOUNDS))
def test_default_bounds_are_the_specified_ones(precision):
    assert parity.resolve_thresholds(precision) == SPECIFIED_BOUNDS[precision]


def test_fp16_gate_fails_an_engine_just_below_cosine_0_999():
    emb = _unit(np.random.default_rng(1).standard_normal((parity.PROBE_SIZE, 64)))
    noise = _unit(np.random.default_rng(2).standard_normal(emb.shape))
    moved = _unit(emb + 0.05 * noise)  # cosine ~0.9988 to the reference per row: below 0.999
    cosines = (emb * moved).sum(axis=1)
    assert 0.99 < cosines.min() < 0.999
    assert not parity.compare(emb, moved, parity.resolve_thresholds("fp16"))["passed"]


def test_thresholds_live_in_one_table_and_are_overridable():
    assert parity.resolve_thresholds("fp32") == {"max_abs_diff": 1e-4}
    assert parity.resolve_thresholds("fp16", {"min_cosine": 0.99})["min_cosine"] == 0.99
    assert parity.resolve_thresholds("int8")["top10_agreement"] == 0.9
    with pytest.raises(SpLIPError, match=r"unknown parity threshold 'cosine'"):
        parity.resolve_thresholds("fp16", {"cosine": 0.9})


def test_nan_embeddings_never_pass():
    emb = _unit(np.random.default_rng(0).standard_normal((40, 16)))
    broken = emb.copy()
    broken[0, 0] = np.nan
    assert not parity.compare(emb, broken, {"min_cosine": 0.999})["passed"]


def test_probe_batch_is_seeded_and_diverse():
    a, b = parity.probe_images(32), parity.probe_images(32)
    assert a.shape == (parity.PROBE_SIZE, 3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])
