"""The ZS / GZS / FG protocol over a dataset on disk, with bad files skipped and reported."""
from __future__ import annotations

import numpy as np
import pytest

from splip_engine import SpLIPConfig, SpLIPError, build_model
from splip_engine.data.folder import SBIRFolder
from splip_engine.data.mini import make_mini_dataset
from splip_engine.evaluation import retrieval_metrics
from splip_engine.protocol import embed_part, evaluate_protocol, fg_pairs
from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = make_mini_dataset(tmp_path_factory.mktemp("p") / "data", classes=5, per_class=6)
    (data.sketch_root / data.unseen[0] / "broken.png").write_bytes(b"\x89PNG broken")
    model = build_model(SpLIPConfig(clip_model="tiny", pretrained=""))
    folder = SBIRFolder(data.sketch_root, data.photo_root)
    return folder, folder.split_classes(data.unseen_file), TorchEncoder(model, model_manifest(model))


def test_modes_match_direct_metric_calls_and_skip_bad_files(setup):
    folder, (seen, unseen), encoder = setup
    results = evaluate_protocol(encoder, folder.subset(unseen), folder.subset(seen))
    assert set(results) == {"zs", "gzs", "fg", "_meta"}
    assert [s["path"].endswith("broken.png") for s in results["_meta"]["skipped"]] == [True]
    queries = embed_part(encoder, folder.subset(unseen), "sketch")
    photos = embed_part(encoder, folder.subset(unseen), "photo")
    seen_photos = embed_part(encoder, folder.subset(seen), "photo")
    assert results["zs"] == retrieval_metrics(queries.embeddings, queries.labels, photos.embeddings, photos.labels)
    gzs = retrieval_metrics(queries.embeddings, queries.labels, np.concatenate([photos.embeddings,
                            seen_photos.embeddings]), np.concatenate([photos.labels, seen_photos.labels]))
    assert results["gzs"] == gzs
    assert 0 <= results["fg"]["acc_1"] <= results["fg"]["acc_5"] <= 1


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
