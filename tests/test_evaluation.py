"""retrieval_metrics / fg_accuracy against a per-query reference written from SPEC §5, hand cases, errors."""
import numpy as np
import pytest
import torch

from splip_engine.errors import SpLIPError
from splip_engine.evaluation import fg_accuracy, format_metrics_table, retrieval_metrics


def _reference_ap(rel: np.ndarray, n_relevant: int) -> float:
    """VOC-style AP exactly as SPEC §5 words it (pad, monotone from the right, sum where recall moves)."""
    tp, fp = np.cumsum(rel), np.cumsum(1 - rel)
    recall, precision = tp / n_relevant, tp / (tp + fp)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    changes = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def _reference_metrics(q_emb, q_labels, g_emb, g_labels, ks):
    """Plain per-query loop: rank by float64 cosine, stable (gallery order on ties), SPEC §5 formulas."""
    q = q_emb / np.linalg.norm(q_emb, axis=1, keepdims=True)
    g = g_emb / np.linalg.norm(g_emb, axis=1, keepdims=True)
    per_query = {"map_all": []} | {f"map_{k}": [] for k in ks} | {f"prec_{k}": [] for k in ks}
    skipped = 0
    for qi in range(len(q)):
        order = np.argsort(-(g @ q[qi]), kind="stable")
        rel = (g_labels[order] == q_labels[qi]).astype(np.float64)
        n_rel = int(rel.sum())
        if n_rel == 0:
            skipped += 1
            continue
        per_query["map_all"].append(_reference_ap(rel, n_rel))
        for k in ks:
            per_query[f"map_{k}"].append(_reference_ap(rel[:k], min(k, n_rel)))
            per_query[f"prec_{k}"].append(rel[: min(k, n_rel)].mean())
    out = {name: float(np.mean(v)) for name, v in per_query.items()}
    return out | {"n_queries": len(q) - skipped, "n_skipped": skipped}


def _quantised(rng, n: int, dim: int = 16, nonzero: int = 4) -> np.ndarray:
    """Rows of `nonzero` entries ±1 times a power of two: cosines are exact multiples of 1/nonzero in
    float32 and float64 alike, so both sides rank identically and ties are plentiful."""
    x = np.zeros((n, dim))
    for row in x:
        row[rng.choice(dim, nonzero, replace=False)] = rng.choice([-1.0, 1.0], nonzero)
    return x * 2.0 ** rng.integers(-2, 3, size=(n, 1))


def _assert_metrics_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("dim,nonzero", [(16, 4), (64, 16)])
def test_matches_per_query_reference_on_tied_rankings(dim, nonzero):
    rng = np.random.default_rng(dim)
    q_emb, g_emb = _quantised(rng, 40, dim, nonzero), _quantised(rng, 300, dim, nonzero)
    q_labels, g_labels = rng.integers(0, 7, 40), rng.integers(0, 6, 300)  # class 6: queries with R = 0
    ks = (1, 7, 50, 500)  # 500 > gallery size
    want = _reference_metrics(q_emb, q_labels, g_emb, g_labels, ks)
    assert want["n_skipped"] > 0
    _assert_metrics_close(retrieval_metrics(q_emb, q_labels, g_emb, g_labels, ks=ks), want)


def test_accepts_torch_float16_and_string_labels():
    rng = np.random.default_rng(1)
    q_emb, g_emb = _quantised(rng, 20), _quantised(rng, 100)
    names = np.array(["cat", "dog", "owl", "ant"])
    q_labels, g_labels = names[rng.integers(0, 4, 20)], names[rng.integers(0, 4, 100)]
    want = _reference_metrics(q_emb, q_labels, g_emb, g_labels, (100, 200))
    got = retrieval_metrics(
        torch.from_numpy(q_emb).half(), list(q_labels), torch.from_numpy(g_emb).half(), list(g_labels)
    )
    _assert_metrics_close(got, want)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(2)
    q_emb, g_emb = _quantised(rng, 23), _quantised(rng, 200)
    q_labels, g_labels = rng.integers(0, 5, 23), rng.integers(0, 5, 200)
    whole = retrieval_metrics(q_emb, q_labels, g_emb, g_labels, ks=(10, 50))
    for chunk_size in (1, 4, 23):
        assert retrieval_metrics(q_emb, q_labels, g_emb, g_labels, ks=(10, 50), chunk_size=chunk_size) == whole


def _unit_2d(cosines, scale=3.0):
    """2-D vectors with the given cosine to (1, 0), scaled to check that inputs get normalised."""
    c = np.asarray(cosines, dtype=np.float64)
    return scale * np.stack([c, np.sqrt(1 - c**2)], axis=1)


# Gallery cosines to the query (1, 0): 0.9 > 0.7 > 0.5 > 0.3 > 0.1 > -0.2 ranks the gallery rows as
# 1, 3, 0, 4, 2, 5; with labels a a b b b a (by row) the ranked labels are a b a b b a.
_HAND_GALLERY = _unit_2d([0.5, 0.9, 0.1, 0.7, 0.3, -0.2])
_HAND_LABELS = np.array(["a", "a", "b", "b", "b", "a"])


def test_hand_case_interpolated_ap():
    # Query "a": rel = 1 0 1 0 0 1, R = 3. Hits at ranks 1, 3, 6 -> precision 1, 2/3, 1/2, already
    # monotone: AP@all = (1 + 2/3 + 1/2) / 3 = 13/18.
    # AP@2: top 2 = 1 0, R' = min(2, 3) = 2, hit at 1 (precision 1): 1/2.
    # AP@4: top 4 = 1 0 1 0, R' = 3, hits at 1, 3: (1 + 2/3) / 3 = 5/9.
    # P@2 = mean(1 0) = 1/2; P@4 = mean(rel[:min(4, 3)]) = mean(1 0 1) = 2/3.
    got = retrieval_metrics(_unit_2d([1.0]), ["a"], _HAND_GALLERY, _HAND_LABELS, ks=(2, 4))
    want = {"map_all": 13 / 18, "map_2": 1 / 2, "map_4": 5 / 9, "prec_2": 1 / 2, "prec_4": 2 / 3}
    _assert_metrics_close(got, want | {"n_queries": 1, "n_skipped": 0})


def test_hand_case_precision_made_monotone():
    # Query "b": rel = 0 1 0 1 1 0, R = 3. Hits at ranks 2, 4, 5 -> precision 1/2, 2/4, 3/5; made
    # monotone from the right: 3/5, 3/5, 3/5, so AP@all = 3/5 (the raw mean would be 8/15).
    # AP@2: top 2 = 0 1, R' = 2, hit at 2 (precision 1/2): (1/2) / 2 = 1/4.
    # AP@4: top 4 = 0 1 0 1, R' = 3, hits at 2, 4 (precision 1/2, 1/2): 1 / 3.
    # P@2 = mean(0 1) = 1/2; P@4 = mean(0 1 0) = 1/3.
    got = retrieval_metrics(_unit_2d([1.0]), ["b"], _HAND_GALLERY, _HAND_LABELS, ks=(2, 4))
    want = {"map_all": 3 / 5, "map_2": 1 / 4, "map_4": 1 / 3, "prec_2": 1 / 2, "prec_4": 1 / 3}
    _assert_metrics_close(got, want | {"n_queries": 1, "n_skipped": 0})


def test_queries_without_relevant_photos_are_skipped_and_counted():
    # Queries "a", "b" (the two hand cases above) and "z" (R = 0): means over a and b only.
    queries = _unit_2d([1.0, 1.0, 1.0])
    got = retrieval_metrics(queries, ["a", "z", "b"], _HAND_GALLERY, _HAND_LABELS, ks=(2,))
    assert got["n_queries"] == 2 and got["n_skipped"] == 1
    assert got["map_all"] == pytest.approx((13 / 18 + 3 / 5) / 2, abs=1e-12)
    assert got["prec_2"] == pytest.approx(1 / 2, abs=1e-12)


def test_ties_are_broken_by_gallery_order():
    # Two identical photos: the one earlier in the gallery ranks first.
    same = _unit_2d([0.6, 0.6])
    assert retrieval_metrics(_unit_2d([1.0]), [1], same, [0, 1], ks=(1,))["map_all"] == pytest.approx(1 / 2)
    assert retrieval_metrics(_unit_2d([1.0]), [1], same, [1, 0], ks=(1,))["map_all"] == pytest.approx(1.0)
    # Thousands of ties: an unstable sort (torch's default on CPU) scatters them; only a stable one
    # ranks the relevant photos at rows 5, 100 and 4000 as 6th, 101st and 4001st.
    n, relevant = 4096, [5, 100, 4000]
    labels = np.zeros(n, dtype=int)
    labels[relevant] = 1
    expected_ap = np.mean([(i + 1) / (row + 1) for i, row in enumerate(relevant)])
    many = retrieval_metrics(_unit_2d([1.0, 1.0]), [1, 1], _unit_2d(np.full(n, 0.6)), labels)
    assert many["map_all"] == pytest.approx(expected_ap)


def test_fg_accuracy_hand_case():
    # Gallery cosines to the query (1, 0): g0 .9 (cat A), g1 .8 (B), g2 .7 (A), g3 .95 (B).
    # q0 (cat A) is paired with g2: whole gallery, g3, g0, g1 rank above it (rank 4); within A only
    # g0 does (rank 2). q1 (cat B) is paired with g3, first either way.
    # Whole gallery: Acc@1 = Acc@2 = 1/2. Within category: Acc@1 = 1/2, Acc@2 = 1.
    queries, gallery = _unit_2d([1.0, 1.0]), _unit_2d([0.9, 0.8, 0.7, 0.95])
    whole = fg_accuracy(queries, gallery, [2, 3], ks=(1, 2))
    assert whole == {"acc_1": 0.5, "acc_2": 0.5, "n_queries": 2}
    within = fg_accuracy(queries, gallery, [2, 3], ["A", "B"], ["A", "B", "A", "B"], ks=(1, 2))
    assert within == {"acc_1": 0.5, "acc_2": 1.0, "n_queries": 2}


def test_fg_accuracy_matches_reference_with_ties_and_chunks():
    rng = np.random.default_rng(3)
    queries, gallery = _quantised(rng, 30), _quantised(rng, 60)
    g_cats = rng.integers(0, 3, 60)
    pairs = rng.integers(0, 60, 30)
    q_cats = g_cats[pairs]
    scores = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ (
        gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    ).T
    ranks = []
    for i, target in enumerate(pairs):
        candidates = np.nonzero(g_cats == q_cats[i])[0]  # ascending gallery order
        order = candidates[np.argsort(-scores[i, candidates], kind="stable")]
        ranks.append(int(np.nonzero(order == target)[0][0]))
    want = {"acc_1": np.mean(np.array(ranks) < 1), "acc_5": np.mean(np.array(ranks) < 5), "n_queries": 30}
    for chunk_size in (None, 7):
        got = fg_accuracy(queries, gallery, pairs, q_cats, g_cats, chunk_size=chunk_size)
        _assert_metrics_close(got, want)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda q, g: retrieval_metrics(q, [0, 1], g, [0, 1, 0]), r"q_emb has 3 rows but q_labels has 2"),
        (lambda q, g: retrieval_metrics(q, [0, 1, 2], g, [0, 1]), r"g_emb has 3 rows but g_labels has 2"),
        (lambda q, g: retrieval_metrics(q[:, :1], [0, 1, 2], g, [0, 1, 0]), r"same embedding dim"),
        (lambda q, g: retrieval_metrics(q[:0], [], g, [0, 1, 0]), r"q_emb is empty"),
        (lambda q, g: retrieval_metrics(q, [5, 6, 7], g, [0, 1, 0]), r"none of the 3 queries has a relevant"),
        (lambda q, g: retrieval_metrics(q, ["0", "1", "0"], g, [0, 1, 0]), r"mix numbers and strings"),
        (lambda q, g: retrieval_metrics(q, [0, 1, 0], g, [0, 1, 0], ks=(0,)), r"ks=\(0,\)"),
        (lambda q, g: retrieval_metrics(q, [0, 1, 0], g, [0, 1, 0], chunk_size=0), r"chunk_size=0"),
        (lambda q, g: retrieval_metrics(q * np.nan, [0, 1, 0], g, [0, 1, 0]), r"q_emb row 0 has NaN"),
        (lambda q, g: fg_accuracy(q, g, [0, 1, 3]), r"pair_index\[2\]=3 is outside the gallery's 3 rows"),
        (lambda q, g: fg_accuracy(q, g, [0, 1]), r"pair_index has shape \(2,\)"),
        (lambda q, g: fg_accuracy(q, g, [0, 1, 2], ["a"] * 3), r"pass both q_categories and g_categories"),
        (lambda q, g: fg_accuracy(q, g, [0, 1, 2], [0, 0, 0], [0, 1, 0]), r"query 1's paired photo"),
    ],
)
def test_bad_input_raises_clear_error(call, match):
    q, g = _unit_2d([1.0, 0.5, 0.0]), _unit_2d([0.2, 0.4, 0.6])
    with pytest.raises(SpLIPError, match=match):
        call(q, g)


def test_format_metrics_table():
    results = {
        "zs": {"map_all": 0.8021, "prec_100": 0.867, "n_queries": 10, "n_skipped": 0},
        "fg": {"acc_1": 0.3345, "n_queries": 5},
    }
    assert format_metrics_table(results) == (
        "| setting | mAP@all (%) | P@100 (%) | queries | skipped | Acc@1 (%) |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: |\n"
        "| zs | 80.21 | 86.70 | 10 | 0 | - |\n"
        "| fg | - | - | 5 | - | 33.45 |"
    )

