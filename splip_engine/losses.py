"""SpLIP training losses (SPEC §2): adaptive-margin triplet, text-classifier CE, conditional jigsaw.

L = triplet_weight * L_triplet + alpha * L_class + beta * L_cjs (triplet_weight 1 by default; a
weight of 0 leaves its term out of the loss, so it sends no gradient: the loss ablations). SpLIPLoss holds the config, the frozen class text
embeddings and the jigsaw solver F_js; the functions below are its parts, usable on their own.
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from splip_engine.config import SpLIPConfig
from splip_engine.errors import SpLIPError

_MAX_ENUMERATED = math.factorial(9)
"""Grids with at most this many tile permutations choose among all of them; larger ones sample."""
_SAMPLED_CANDIDATES = 100_000


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: torch.Tensor | float
) -> torch.Tensor:
    """mean(max(0, d(a, p) - d(a, n) + margin)) with d = 1 - cos; margin a float or (B,) tensor."""
    d_pos = 1 - F.cosine_similarity(anchor, positive, dim=-1)  # (B,)
    d_neg = 1 - F.cosine_similarity(anchor, negative, dim=-1)  # (B,)
    return F.relu(d_pos - d_neg + margin).mean()


def adaptive_margins(
    class_text_emb: torch.Tensor,
    pos_labels: torch.Tensor,
    neg_labels: torch.Tensor,
    scale: float,
    fixed: float,
    adaptive: bool = True,
) -> torch.Tensor:
    """Per-triplet margins (B,): scale * cos(t(c+), t(c-)) from class text embeddings (C, D), so
    look-alike classes are pushed further apart; `fixed` when not adaptive or where c+ == c-."""
    fixed_margins = torch.full(pos_labels.shape, float(fixed), device=class_text_emb.device)  # (B,)
    if not adaptive:
        return fixed_margins
    text = F.normalize(class_text_emb.detach().float(), dim=-1)  # (C, D)
    margins = scale * (text[pos_labels] * text[neg_labels]).sum(dim=-1)  # (B,)
    return torch.where(pos_labels == neg_labels, fixed_margins, margins)


def classification_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, class_text_emb: torch.Tensor, logit_scale: float | torch.Tensor
) -> torch.Tensor:
    """CE over the classes of logit_scale * cos(f(x), t(c)); embeddings (B, D), text (C, D), labels (B,).

    logit_scale is the multiplier itself (CLIP's `logit_scale.exp()`), not its log.
    """
    logits = logit_scale * F.normalize(embeddings, dim=-1) @ F.normalize(class_text_emb, dim=-1).T  # (B, C)
    return F.cross_entropy(logits, labels)


@functools.lru_cache(maxsize=8)
def _permutation_set(n_perms: int, grid: int, seed: int) -> np.ndarray:
    """Greedy max-min Hamming selection (Noroozi & Favaro 2016), (P, grid**2) int64; see make_permutations."""
    n_tiles = grid * grid
    rng = np.random.default_rng(seed)
    if math.factorial(n_tiles) <= _MAX_ENUMERATED:
        flat = itertools.chain.from_iterable(itertools.permutations(range(n_tiles)))
        candidates = np.fromiter(flat, dtype=np.int8).reshape(-1, n_tiles)  # (n!, T) lexicographic
    else:
        candidates = np.argsort(rng.random((_SAMPLED_CANDIDATES, n_tiles)), axis=1).astype(np.int8)
    columns = np.ascontiguousarray(candidates.T)  # (T, n): one tile position at a time is fast
    if n_perms > len(candidates):
        raise SpLIPError(
            f"jigsaw_permutations={n_perms}: a {grid}x{grid} grid has only {len(candidates)} tile "
            "permutations; lower jigsaw_permutations or raise jigsaw_grid"
        )
    min_dist = np.full(len(candidates), n_tiles + 1, dtype=np.int64)  # (n,) to the chosen set
    sum_dist = np.zeros(len(candidates), dtype=np.int64)  # (n,)
    chosen = [int(rng.integers(len(candidates)))]
    for _ in range(n_perms - 1):
        dist = sum(column != column[chosen[-1]] for column in columns)  # (n,) Hamming to the newest pick
        np.minimum(min_dist, dist, out=min_dist)
        sum_dist += dist
        # farthest candidate: largest min distance, then largest mean distance (Noroozi's criterion)
        chosen.append(int(np.argmax(min_dist * (n_tiles * n_perms + 1) + sum_dist)))
    return candidates[chosen].astype(np.int64)


def make_permutations(n_perms: int = 30, grid: int = 3, seed: int = 0) -> torch.Tensor:
    """The fixed jigsaw label set (P, grid**2) int64 of SPEC §2, the same for the same arguments.

    A seeded random first permutation, then greedily the permutation farthest (in Hamming distance)
    from those chosen: largest min distance, ties by largest mean distance (Noroozi & Favaro's
    criterion), then the first candidate. All (grid**2)! permutations (in lexicographic order) are
    candidates up to 3x3; larger grids choose from 100,000 seeded random ones. For P=30 on 3x3 the
    set has min pairwise Hamming distance 7 of 9 (greedy; the best possible is 8).
    """
    return torch.from_numpy(_permutation_set(n_perms, grid, seed).copy())


def _grid_tiles(images: torch.Tensor, grid: int) -> tuple[torch.Tensor, int, int]:
    """(B, C, H, W) -> tiles (B, grid**2, C, h, w) in row-major order, h = H // grid, w = W // grid."""
    b, c, height, width = images.shape
    h, w = height // grid, width // grid
    tiles = images[:, :, : grid * h, : grid * w].reshape(b, c, grid, h, grid, w)
    return tiles.permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, h, w), h, w


def _place_tiles(images: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Copy of images whose tile i is the input tile perms[b, i]; pixels past the last full tile
    (H % grid rows, W % grid columns) stay in place."""
    grid = math.isqrt(perms.shape[1])
    if grid * grid != perms.shape[1] or perms.shape[0] != images.shape[0]:
        raise SpLIPError(
            f"perms has shape {tuple(perms.shape)}: pass one permutation of grid**2 tiles per image "
            f"({images.shape[0]} images)"
        )
    tiles, h, w = _grid_tiles(images, grid)  # (B, T, C, h, w)
    moved = tiles[torch.arange(len(tiles), device=tiles.device)[:, None], perms]  # (B, T, C, h, w)
    b, _, c = moved.shape[:3]
    moved = moved.reshape(b, grid, grid, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * h, grid * w)
    out = images.clone()
    out[:, :, : grid * h, : grid * w] = moved
    return out


def shuffle_grid(images: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Cut each image (B, 3, H, W) into a grid x grid puzzle and shuffle it by perms (B, grid**2):
    tile i of the result is tile perms[b, i] of the input (row-major tile order)."""
    return _place_tiles(images, perms)


def unshuffle_grid(shuffled: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Inverse of shuffle_grid: unshuffle_grid(shuffle_grid(x, p), p) == x."""
    return _place_tiles(shuffled, torch.argsort(perms, dim=1))


class JigsawSolver(nn.Module):
    """F_js (SPEC §2): which permutation shuffled the sketch, given a context image's tokens.

    Both token sequences (B, N, Dv) are projected to Dv/2 (one projection per role, which also tells
    the encoder which is which), concatenated [context ; shuffled] along the sequence, passed through
    a 2-layer pre-LN Transformer encoder (no dropout), mean-pooled and classified over P permutations.
    """

    def __init__(self, vision_width: int, n_perms: int, n_layers: int = 2):
        super().__init__()
        if vision_width % 2:
            raise SpLIPError(f"vision_width={vision_width}: the jigsaw solver needs an even width (Dv/2)")
        width = vision_width // 2
        heads = max(h for h in range(1, max(1, width // 64) + 1) if width % h == 0)  # 64-wide heads
        self.context_proj = nn.Linear(vision_width, width)
        self.shuffled_proj = nn.Linear(vision_width, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.head = nn.Linear(width, n_perms)

    def forward(self, context_tokens: torch.Tensor, shuffled_tokens: torch.Tensor) -> torch.Tensor:
        """Permutation logits (B, P) from context tokens (B, N, Dv) and shuffled-sketch tokens (B, N', Dv)."""
        pair = torch.cat([self.context_proj(context_tokens), self.shuffled_proj(shuffled_tokens)], dim=1)
        return self.head(self.encoder(pair).mean(dim=1))  # (B, N + N', Dv/2) -> (B, P)


def jigsaw_loss(
    solver: JigsawSolver,
    ctx_tokens_s: torch.Tensor,
    ctx_tokens_pos: torch.Tensor,
    ctx_tokens_neg: torch.Tensor,
    shuffled_tokens: torch.Tensor,
    perm_labels: torch.Tensor,
) -> torch.Tensor:
    """L_cjs = mean_b CE(F_js(s, s'), y) + mean_b max(0, CE(F_js(p+, s'), y) - CE(F_js(p-, s'), y)).

    The hinge is per sample: each shuffled sketch must be easier to solve with its own positive photo
    as context than with its negative. All tokens (B, N, Dv); perm_labels (B,) int64 in [0, P).
    The three contexts go through the solver as one batch of 3B.
    """
    batch = len(perm_labels)
    contexts = torch.cat([ctx_tokens_s, ctx_tokens_pos, ctx_tokens_neg])  # (3B, N, Dv)
    logits = solver(contexts, shuffled_tokens.repeat(3, 1, 1))  # (3B, P)
    ce = F.cross_entropy(logits, perm_labels.repeat(3), reduction="none").view(3, batch)  # (3, B)
    return ce[0].mean() + F.relu(ce[1] - ce[2]).mean()


class SpLIPLoss(nn.Module):
    """The SpLIP objective (SPEC §2): L = triplet_weight * L_triplet + alpha * L_class + beta * L_cjs.

    sketch_text_emb / photo_text_emb (C, D): frozen, un-prompted text embeddings of
    "a sketch of a {c}" / "a photo of a {c}" for the C seen classes (the photo ones also give the
    adaptive margins); logit_scale: the classifier's multiplier (CLIP's `logit_scale.exp()`);
    vision_width: Dv of the final-layer visual tokens fed to the jigsaw solver.
    """

    def __init__(
        self,
        cfg: SpLIPConfig,
        sketch_text_emb: torch.Tensor,
        photo_text_emb: torch.Tensor,
        logit_scale: float,
        vision_width: int,
    ):
        super().__init__()
        if sketch_text_emb.shape != photo_text_emb.shape:
            raise SpLIPError(
                f"sketch_text_emb {tuple(sketch_text_emb.shape)} and photo_text_emb "
                f"{tuple(photo_text_emb.shape)} differ: pass (C, D) embeddings of the same seen classes"
            )
        self.cfg = cfg
        self.logit_scale = float(logit_scale)
        self.register_buffer("sketch_text_emb", F.normalize(sketch_text_emb.detach().float(), dim=-1), persistent=False)
        self.register_buffer("photo_text_emb", F.normalize(photo_text_emb.detach().float(), dim=-1), persistent=False)
        self.register_buffer(
            "permutations", make_permutations(cfg.jigsaw_permutations, cfg.jigsaw_grid), persistent=False
        )  # (P, grid**2) int64
        self.jigsaw_solver = JigsawSolver(vision_width, cfg.jigsaw_permutations)

    def sample_permutations(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random jigsaw labels y (B,) int64 and their permutations (B, grid**2), for shuffle_grid."""
        labels = torch.randint(len(self.permutations), (batch_size,), generator=generator)
        labels = labels.to(self.permutations.device)
        return labels, self.permutations[labels]

    def forward(
        self,
        sketch: torch.Tensor,
        positive: torch.Tensor,
        negative: torch.Tensor,
        *,
        labels: torch.Tensor,
        negative_labels: torch.Tensor,
        sketch_tokens: torch.Tensor | None = None,
        positive_tokens: torch.Tensor | None = None,
        negative_tokens: torch.Tensor | None = None,
        shuffled_tokens: torch.Tensor | None = None,
        perm_labels: torch.Tensor | None = None,
        fine_grained: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The loss of one batch of triplets and its parts.

        sketch / positive / negative: embeddings (B, D) of the anchor sketch s, the positive photo p+
        (same class, or the paired photo when fine_grained) and the negative photo p-.
        labels (B,): seen-class index of s and p+; negative_labels (B,): that of p-.
        *_tokens (B, N, Dv): final-layer visual tokens of s, p+, p- and of the shuffled sketch s'
        (from SpLIP.encode_with_tokens); perm_labels (B,): the jigsaw label y of s'. The tokens and
        perm_labels are needed only when beta > 0. fine_grained: use the fixed margin throughout.
        Returns `loss` (to backpropagate) and the detached, unweighted parts `triplet`,
        `classification`, `jigsaw` (logged also where their weight is 0; `jigsaw` is 0 when beta is).
        """
        cfg = self.cfg
        margins = adaptive_margins(
            self.photo_text_emb,
            labels,
            negative_labels,
            cfg.margin_scale,
            cfg.fixed_margin,
            adaptive=cfg.adaptive_margin and not fine_grained,
        )  # (B,)
        triplet = triplet_loss(sketch, positive, negative, margins)
        photos, photo_labels = torch.cat([positive, negative]), torch.cat([labels, negative_labels])  # (2B, D)
        sketch_ce = classification_loss(sketch, labels, self.sketch_text_emb, self.logit_scale)
        photo_ce = classification_loss(photos, photo_labels, self.photo_text_emb, self.logit_scale)
        classification = (sketch_ce + 2 * photo_ce) / 3  # mean CE over the 3B images s, p+, p-
        jigsaw = self._jigsaw(sketch_tokens, positive_tokens, negative_tokens, shuffled_tokens, perm_labels)
        weighted = [(cfg.triplet_weight, triplet), (cfg.alpha, classification), (cfg.beta, jigsaw)]
        loss = sum(weight * term for weight, term in weighted if weight > 0)  # weight 0: no term, no gradient
        return {
            "loss": loss,
            "triplet": triplet.detach(),
            "classification": classification.detach(),
            "jigsaw": jigsaw.detach(),
        }

    def _jigsaw(self, *tokens_and_labels: torch.Tensor | None) -> torch.Tensor:
        """L_cjs, or 0 when beta == 0 (then the tokens may be None)."""
        if self.cfg.beta == 0:
            return torch.zeros((), device=self.permutations.device)
        if any(t is None for t in tokens_and_labels):
            raise SpLIPError(
                "SpLIPLoss with beta > 0 needs sketch_tokens, positive_tokens, negative_tokens, "
                "shuffled_tokens and perm_labels (or set beta=0 to train without the jigsaw loss)"
            )
        return jigsaw_loss(self.jigsaw_solver, *tokens_and_labels)
