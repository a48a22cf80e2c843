"""SpLIP losses (SPEC §2): triplet + adaptive margin, classification, jigsaw puzzle and solver, SpLIPLoss."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from splip_engine.config import SpLIPConfig
from splip_engine.errors import SpLIPError
from splip_engine.losses import (
    JigsawSolver,
    SpLIPLoss,
    _permutation_set,
    adaptive_margins,
    classification_loss,
    jigsaw_loss,
    make_permutations,
    shuffle_grid,
    triplet_loss,
    unshuffle_grid,
)

_E = torch.eye(3)


def test_triplet_is_zero_when_margin_met_and_grows_with_margin():
    # d(a, p) = 0 and d(a, n) = 1 - cos 90° = 1: zero while margin <= 1, then margin - 1.
    anchor, positive, negative = _E[:1], 2 * _E[:1], _E[1:2]  # un-normalised positive on purpose
    assert triplet_loss(anchor, positive, negative, 0.5).item() == 0.0
    assert triplet_loss(anchor, positive, negative, 1.25).item() == pytest.approx(0.25)
    assert triplet_loss(anchor, positive, negative, 1.5).item() == pytest.approx(0.5)
    # per-triplet margins (B,): mean of max(0, -1 + m_b) = (0 + 0.5) / 2
    anchors, negatives = _E[:1].repeat(2, 1), _E[1:2].repeat(2, 1)
    two = triplet_loss(anchors, anchors, negatives, torch.tensor([0.5, 1.5]))
    assert two.item() == pytest.approx(0.25)


def test_adaptive_margin_follows_class_text_similarity():
    # t0 = (1, 0), t1 at cos 0.8 to t0, t2 at cos 0.2 to t0.
    text = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.2, math.sqrt(1 - 0.04)]]) * 5  # un-normalised
    pos, neg = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 1])
    margins = adaptive_margins(text, pos, neg, scale=0.25, fixed=0.2, adaptive=True)
    # scale * cos: more similar classes (0, 1) get the larger margin; c+ == c- gets the fixed one
    assert margins.tolist() == pytest.approx([0.25 * 0.8, 0.25 * 0.2, 0.2])
    assert margins[0] > margins[1]
    assert adaptive_margins(text, pos, neg, 0.25, 0.2, adaptive=False).tolist() == pytest.approx([0.2] * 3)


def test_classification_loss_is_ce_over_scaled_text_cosines():
    # embedding = 3 * t0 with orthogonal class texts: logits = 10 * (1, 0, 0) -> CE = log(1 + 2 e^-10)
    loss = classification_loss(3 * _E[:1], torch.tensor([0]), _E, logit_scale=10.0)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(-10)), abs=1e-6)  # float32 log-softmax
    wrong = classification_loss(3 * _E[:1], torch.tensor([1]), _E, logit_scale=10.0)
    assert wrong.item() == pytest.approx(10 + math.log(1 + 2 * math.exp(-10)), rel=1e-5)


def _min_hamming(perms: torch.Tensor) -> int:
    """Smallest Hamming distance between two different rows of (P, T) permutations."""
    distance = (perms[:, None, :] != perms[None, :, :]).sum(-1)  # (P, P)
    return int((distance + perms.shape[1] * torch.eye(len(perms), dtype=torch.int64)).min())


def test_permutation_set_is_fixed_distinct_and_far_apart():
    perms = make_permutations(30, 3, seed=0)
    _permutation_set.cache_clear()  # recompute from scratch: same seed, same set
    assert torch.equal(make_permutations(30, 3, seed=0), perms)
    assert perms.shape == (30, 9) and perms.dtype == torch.int64
    assert torch.equal(perms.sort(dim=1).values, torch.arange(9).expand(30, 9))  # each row a permutation
    assert len({tuple(p) for p in perms.tolist()}) == 30
    # far apart: the closest pair is further apart than in any of 50 random sets of 30 permutations
    random_sets = torch.stack([torch.stack([torch.randperm(9, generator=torch.Generator().manual_seed(100 * s + i))
                                            for i in range(30)]) for s in range(50)])  # (50, 30, 9)
    assert _min_hamming(perms) > max(_min_hamming(r) for r in random_sets)
    assert not torch.equal(make_permutations(30, 3, seed=1), perms)


def test_too_many_permutations_for_the_grid_is_an_error():
    with pytest.raises(SpLIPError, match=r"jigsaw_permutations=25: a 2x2 grid has only 24"):
        make_permutations(25, 2)


def _tile_index_images(batch: int, grid: int, tile: int, extra: int) -> torch.Tensor:
    """Images (B, 3, H, W) whose tile i (row-major) holds the value i, plus `extra` noisy border pixels."""
    side = grid * tile
    index = torch.arange(grid * grid, dtype=torch.float32).view(grid, grid)
    tiles = index.repeat_interleave(tile, 0).repeat_interleave(tile, 1)  # (side, side)
    images = torch.rand(batch, 3, side + extra, side + extra)
    images[:, :, :side, :side] = tiles
    return images


@pytest.mark.parametrize("extra", [0, 2])  # 2: H, W not multiples of the grid (e.g. 224 px / 3)
def test_shuffle_grid_applies_the_permutation_and_is_invertible(extra):
    grid, tile = 3, 4
    images = _tile_index_images(5, grid, tile, extra)
    perms = make_permutations(30, grid)[torch.tensor([0, 3, 7, 11, 29])]  # (5, 9)
    shuffled = shuffle_grid(images, perms)
    for b in range(5):
        for i in range(grid * grid):  # tile i of the result is input tile perms[b, i]
            row, col = divmod(i, grid)
            patch = shuffled[b, :, row * tile : (row + 1) * tile, col * tile : (col + 1) * tile]
            assert torch.all(patch == perms[b, i])
    assert torch.equal(shuffled[..., grid * tile :, :], images[..., grid * tile :, :])  # border kept
    assert torch.equal(unshuffle_grid(shuffled, perms), images)
    noise = torch.rand(5, 3, 14, 13)
    assert torch.equal(unshuffle_grid(shuffle_grid(noise, perms), perms), noise)


def test_jigsaw_hinge_pushes_positive_context_below_negative():
    torch.manual_seed(0)
    solver = JigsawSolver(vision_width=32, n_perms=6)
    batch, tokens = 8, 5
    shuffled, ctx_s = torch.randn(batch, tokens, 32), torch.randn(batch, tokens, 32)
    a, b = torch.randn(batch, tokens, 32), torch.randn(batch, tokens, 32)
    y = torch.randint(0, 6, (batch,))

    def ce(ctx):
        return F.cross_entropy(solver(ctx, shuffled), y, reduction="none")  # (B,)

    with torch.no_grad():  # make the hinge active in every sample: p+ is the harder context
        pos_harder = (ce(a) > ce(b))[:, None, None]
    ctx_pos = torch.where(pos_harder, a, b).requires_grad_()
    ctx_neg = torch.where(pos_harder, b, a).requires_grad_()
    with torch.no_grad():
        gap_before = ce(ctx_pos) - ce(ctx_neg)  # (B,) > 0
    jigsaw_loss(solver, ctx_s, ctx_pos, ctx_neg, shuffled, y).backward()
    with torch.no_grad():
        gap_after = ce(ctx_pos - 0.1 * ctx_pos.grad) - ce(ctx_neg - 0.1 * ctx_neg.grad)
    assert torch.all(gap_before > 0)
    assert torch.all(gap_after < gap_before)


def test_jigsaw_loss_value_is_ce_plus_per_sample_hinge():
    torch.manual_seed(1)
    solver = JigsawSolver(vision_width=16, n_perms=4)
    ctx = [torch.randn(6, 3, 16) for _ in range(3)]
    shuffled, y = torch.randn(6, 3, 16), torch.randint(0, 4, (6,))
    ce = [F.cross_entropy(solver(c, shuffled), y, reduction="none") for c in ctx]
    want = ce[0].mean() + F.relu(ce[1] - ce[2]).mean()
    assert jigsaw_loss(solver, *ctx, shuffled, y).item() == pytest.approx(want.item(), rel=1e-5)


def _loss_inputs(batch=4, dim=8, tokens=5, width=16, n_perms=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = {name: torch.randn(batch, dim, generator=g, requires_grad=True) for name in "spn"}
    tok = {name: torch.randn(batch, tokens, width, generator=g, requires_grad=True) for name in "spnx"}
    kwargs = {
        "labels": torch.tensor([0, 1, 2, 0][:batch]),
        "negative_labels": torch.tensor([1, 2, 0, 2][:batch]),
        "sketch_tokens": tok["s"],
        "positive_tokens": tok["p"],
        "negative_tokens": tok["n"],
        "shuffled_tokens": tok["x"],
        "perm_labels": torch.randint(0, n_perms, (batch,), generator=g),
    }
    return emb, tok, kwargs


def _splip_loss(cfg, dim=8, width=16):
    g = torch.Generator().manual_seed(1)
    return SpLIPLoss(cfg, torch.randn(3, dim, generator=g), torch.randn(3, dim, generator=g), 10.0, width)


def test_splip_loss_combines_its_parts_and_backpropagates():
    cfg = SpLIPConfig(clip_model="tiny", pretrained="", alpha=0.5, beta=0.1)
    loss_fn = _splip_loss(cfg)
    emb, tok, kwargs = _loss_inputs()
    out = loss_fn(emb["s"], emb["p"], emb["n"], **kwargs)
    assert set(out) == {"loss", "triplet", "classification", "jigsaw"}
    assert not any(out[k].requires_grad for k in ("triplet", "classification", "jigsaw"))
    want = out["triplet"] + 0.5 * out["classification"] + 0.1 * out["jigsaw"]
    assert out["loss"].item() == pytest.approx(want.item(), rel=1e-6)
    # the parts are the standalone functions: triplet with adaptive margins, CE over s, p+, p-
    margins = adaptive_margins(loss_fn.photo_text_emb, kwargs["labels"], kwargs["negative_labels"], 0.25, 0.2)
    assert out["triplet"].item() == pytest.approx(triplet_loss(emb["s"], emb["p"], emb["n"], margins).item())
    out["loss"].backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in [*emb.values(), *tok.values()])
    assert all(p.grad is not None for p in loss_fn.jigsaw_solver.parameters())


def test_splip_loss_fine_grained_and_fixed_margin():
    emb, _, kwargs = _loss_inputs()
    fixed = triplet_loss(emb["s"], emb["p"], emb["n"], 0.2).item()
    cfg = SpLIPConfig(clip_model="tiny", pretrained="")
    assert _splip_loss(cfg)(emb["s"], emb["p"], emb["n"], **kwargs, fine_grained=True)["triplet"].item() == (
        pytest.approx(fixed)
    )
    no_adaptive = _splip_loss(dataclasses.replace(cfg, adaptive_margin=False))
    assert no_adaptive(emb["s"], emb["p"], emb["n"], **kwargs)["triplet"].item() == pytest.approx(fixed)


def test_splip_loss_without_jigsaw_needs_no_tokens_and_with_it_asks_for_them():
    emb, _, kwargs = _loss_inputs()
    labels = {k: kwargs[k] for k in ("labels", "negative_labels")}
    cfg = SpLIPConfig(clip_model="tiny", pretrained="", beta=0.0)
    assert _splip_loss(cfg)(emb["s"], emb["p"], emb["n"], **labels)["jigsaw"].item() == 0.0
    with pytest.raises(SpLIPError, match=r"beta > 0 needs sketch_tokens"):
        _splip_loss(dataclasses.replace(cfg, beta=0.1))(emb["s"], emb["p"], emb["n"], **labels)


def test_training_step_with_tiny_model_reads_top_to_bottom():
    from splip_engine import build_model

    torch.manual_seed(0)
    cfg = SpLIPConfig(clip_model="tiny", pretrained="")
    model = build_model(cfg)
    classes = ["cat", "dog", "owl"]
    loss_fn = SpLIPLoss(
        cfg,
        model.class_text_embeddings(classes, "a sketch of a {}"),
        model.class_text_embeddings(classes, "a photo of a {}"),
        logit_scale=model.clip.logit_scale.exp().item(),
        vision_width=model.vision_width,
    )
    sketches, positives, negatives = (torch.rand(2, 3, 32, 32) for _ in range(3))
    perm_labels, perms = loss_fn.sample_permutations(2, torch.Generator().manual_seed(0))

    s_emb, s_tok = model.encode_with_tokens(sketches, "sketch")
    p_emb, p_tok = model.encode_with_tokens(positives, "photo")
    n_emb, n_tok = model.encode_with_tokens(negatives, "photo")
    _, x_tok = model.encode_with_tokens(shuffle_grid(sketches, perms), "sketch")
    out = loss_fn(
        s_emb, p_emb, n_emb,
        labels=torch.tensor([0, 1]), negative_labels=torch.tensor([2, 0]),
        sketch_tokens=s_tok, positive_tokens=p_tok, negative_tokens=n_tok,
        shuffled_tokens=x_tok, perm_labels=perm_labels,
    )
    out["loss"].backward()
    assert torch.equal(perms, loss_fn.permutations[perm_labels])
    blocks = [model.text_prompter, model.template_prompter, model.layer_prompter, loss_fn.jigsaw_solver]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for block in blocks for p in block.parameters())
