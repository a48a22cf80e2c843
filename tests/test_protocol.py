"""The ZS / GZS / FG protocol over a dataset on disk, with bad files skipped and reported."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from splip_engine import SpLIPConfig, SpLIPError, build_model
from splip_engine.data.folder import SBIRFolder
from splip_engine.data.mini import make_mini_dataset
from splip_engine.protocol import embed_part, evaluate_protocol, fg_pairs, gzs_seen_split
from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = make_mini_dataset(tmp_path_factory.mktemp("p") / "data", classes=5, per_class=6)
    (data.sketch_root / data.unseen[0] / "broken.png").write_bytes(b"\x89PNG broken")
    model = build_model(SpLIPConfig(clip_model="tiny", pretrained=""))
    folder = SBIRFolder(data.sketch_root, data.photo_root)
    return folder, folder.split_classes(data.unseen_file), TorchEncoder(model, model_manifest(model))


def _files(root: Path, classes: list[str]) -> Counter:
    """Image files per class on disk (the broken PNG included), counted without the package."""
    return Counter({name: len([f for f in (root / name).iterdir() if f.suffix in (".png", ".jpg")]) for name in classes})


def test_modes_score_the_right_queries_against_the_right_galleries(setup, monkeypatch):
    """ZS: unseen sketches (the unreadable one skipped and reported) vs unseen photos; GZS: the
    same queries vs unseen + seen photos. The metric itself is tests/test_evaluation.py's job:
    here it is spied on, to see what the protocol hands it."""
    from splip_engine import evaluation

    folder, (seen, unseen), encoder = setup
    handed = []

    def spy(q_emb, q_labels, g_emb, g_labels, ks=(100, 200)):
        handed.append((Counter(q_labels.tolist()), Counter(g_labels.tolist()), q_emb, g_emb))
        return {"map_all": 0.5}

    monkeypatch.setattr(evaluation, "retrieval_metrics", spy)
    results = evaluate_protocol(encoder, folder.subset(unseen), folder.subset(seen))
    assert set(results) == {"zs", "gzs", "fg", "_meta"}
    assert [s["path"].endswith("broken.png") for s in results["_meta"]["skipped"]] == [True]
    sketches = _files(folder.sketch_root, unseen) - Counter({unseen[0]: 1})  # minus broken.png
    unseen_photos, seen_photos = _files(folder.photo_root, unseen), _files(folder.photo_root, seen)
    (zs_queries, zs_gallery, zs_q, zs_g), (gzs_queries, gzs_gallery, gzs_q, gzs_g) = handed
    assert zs_queries == gzs_queries == sketches
    assert zs_gallery == unseen_photos and gzs_gallery == unseen_photos + seen_photos
    assert results["zs"] == {"map_all": 0.5, "n_gallery": sum(unseen_photos.values())}  # the gallery sizes reported
    assert results["gzs"] == {"map_all": 0.5, "n_gallery": sum((unseen_photos + seen_photos).values())}
    direct = encoder.embed(sorted(str(p) for p in (folder.photo_root / unseen[0]).iterdir()), "photo")
    np.testing.assert_allclose(zs_g[: len(direct)], direct, atol=1e-6)  # rows are those photos' embeddings
    np.testing.assert_array_equal(gzs_q, zs_q)
    np.testing.assert_array_equal(gzs_g[: len(zs_g)], zs_g)
    assert 0 <= results["fg"]["acc_1"] <= results["fg"]["acc_5"] <= 1
    assert (results["fg"]["n_queries"], results["fg"]["n_gallery"]) == (sum(sketches.values()),
                                                                         sum(unseen_photos.values()))


def test_fg_pairs_follow_sketchy_naming(setup):
    folder, (_, unseen), encoder = setup
    queries = embed_part(encoder, folder.subset(unseen), "sketch")
    photos = embed_part(encoder, folder.subset(unseen), "photo")
    rows, targets = fg_pairs(queries, photos)
    assert len(rows) == len(queries.paths)
    for r, t in zip(rows, targets):
        assert queries.paths[r].split("/")[-1].replace("-1.png", "") == photos.paths[t].split("/")[-1][:-4]


def test_unknown_mode_is_refused(setup):
    folder, (_, unseen), encoder = setup
    with pytest.raises(SpLIPError, match="unknown evaluation modes"):
        evaluate_protocol(encoder, folder.subset(unseen), modes=("zs", "top1"))


def test_gzs_seen_photos_all_or_only_those_held_out_of_training(setup):
    folder, (seen, _), _ = setup
    assert gzs_seen_split(folder, seen, "all") == folder.subset(seen)
    train, held_out = folder.held_out(seen, 0.25, seed=3)
    assert gzs_seen_split(folder, seen, "held-out", 0.25, seed=3) == held_out
    assert all(set(held_out.photos[n]).isdisjoint(train.photos[n]) and held_out.photos[n] for n in seen)
    with pytest.raises(SpLIPError, match="needs a held-out fraction > 0"):
        gzs_seen_split(folder, seen, "held-out", 0.0)
    with pytest.raises(SpLIPError, match="unknown GZS seen-photo choice 'some'"):
        gzs_seen_split(folder, seen, "some")
