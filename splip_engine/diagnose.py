"""What B_t carries, for any checkpoint: how much the text prompts T vary across images, how much
the prompted text pass (W_l) and B_vt's visual prompts (V_ms,l) change when every image's T is
replaced by the data-set mean T̄, what that does to the embeddings and to ZS retrieval, and the
gradient norm that reaches each trainable block on a few training batches.

Variation is reported relative to the mean: `rel_spread(X) = mean_i ||X_i - X̄|| / ||X̄||`, for T and
for each stage before it (E_0 pooled over patches, the LayerNorm'd pool B_t's MLP reads, its hidden
layer), so a T that is near constant shows where its image dependence is lost.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import torch

from splip_engine.errors import SpLIPError


def rel_spread(x: torch.Tensor) -> float:
    """mean_i ||x_i - mean(x)|| / ||mean(x)|| over the first axis (norms over the rest)."""
    flat = x.flatten(1).double()
    centre = flat.mean(0)
    return float((flat - centre).norm(dim=1).mean() / centre.norm().clamp_min(1e-12))


def _rel_change(new: torch.Tensor, ref: torch.Tensor) -> float:
    """mean_i ||new_i - ref_i|| / ||ref_i|| (row-wise over the first axis)."""
    new, ref = new.flatten(1).double(), ref.flatten(1).double()
    return float(((new - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).mean())


def load_images(split, modality: str, spec, limit: int) -> torch.Tensor:
    """Up to `limit` preprocessed `modality` images of `split`, taken evenly over its files (N, 3, S, S)."""
    from splip_engine.data.transforms import eval_transform

    items = split.items(modality)
    step = max(1, len(items) // max(1, limit))
    transform = eval_transform(modality, spec)
    return torch.stack([transform(path) for path, _ in items[::step][:limit]])


class _FixedPrompts(torch.nn.Module):
    """Stands in for B_t: every image gets the same T (1, m, Dt), broadcast to the batch."""

    def __init__(self, prompts: torch.Tensor):
        super().__init__()
        self.prompts = prompts

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.prompts.expand(patches.shape[0], -1, -1)


@contextlib.contextmanager
def fixed_text_prompts(model, means: dict[str, torch.Tensor]) -> Iterator[None]:
    """Within the block, `model`'s B_t outputs means[modality] (1, m, Dt) for every image of that
    modality (the method `visual_prompts` is shadowed on the instance, then restored)."""
    original = model.text_prompter

    def visual_prompts(patches: torch.Tensor, modality: str):
        model.text_prompter = _FixedPrompts(means[modality])
        try:
            return type(model).visual_prompts(model, patches, modality)
        finally:
            model.text_prompter = original

    model.visual_prompts = visual_prompts
    try:
        yield
    finally:
        del model.visual_prompts


def _stages(b_t, patches: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each step of B_t on E_0 (N, Np, Dv): the pools, the MLP's hidden layer, and T."""
    normed = b_t.norm(patches).mean(dim=1)  # (N, Dv): what B_t's MLP reads
    hidden = b_t.mlp[1](b_t.mlp[0](normed))  # (N, Dv/2)
    return {"E_0 mean over patches": patches.mean(dim=1), "LayerNorm(E_0) mean over patches": normed,
            "B_t hidden": hidden, "T": b_t(patches)}


@torch.no_grad()
def prompt_statistics(model, images: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, dict]]:
    """T's spread over `images` (modality -> (N, 3, S, S)) and that of the stages before it (over
    all images, and within each modality), T's size beside the template's word embeddings, and the
    relative change of W_l, V_ms,l and the embeddings when T is replaced by a constant: its mean
    over all the images ("data-set mean") or over the images of the modality ("modality mean").
    Also returns those constants, {kind: {modality: (1, m, Dt)}}."""
    b_t = model.text_prompter
    patches = {m: model.patch_embeddings(x) for m, x in images.items()}  # E_0 (N, Np, Dv)
    per_modality = {m: _stages(b_t, p) for m, p in patches.items()}
    every = {k: torch.cat([s[k] for s in per_modality.values()]) for k in per_modality["sketch"]}
    global_mean = every["T"].mean(0, keepdim=True)
    means = {"data-set mean": {m: global_mean for m in patches},
             "modality mean": {m: s["T"].mean(0, keepdim=True) for m, s in per_modality.items()}}
    words = model.clip.token_embedding(getattr(model, "_template_ids_sketch"))  # (P_tg, Dt)
    stats: dict[str, Any] = {
        "n_images": {m: len(x) for m, x in images.items()},
        "rel_spread": {"all": {k: rel_spread(v) for k, v in every.items()},
                       **{m: {k: rel_spread(v) for k, v in s.items()} for m, s in per_modality.items()}},
        "T_norm_per_token": float(every["T"].norm(dim=-1).mean()),
        "word_embedding_norm_per_token": float(words.norm(dim=-1).mean()),
        "replaced_by": {},
    }
    for kind, constant in means.items():
        changes: dict[str, Any] = {}
        for modality, p in patches.items():
            own_t = per_modality[modality]["T"]
            own = model.prompted_text_states(own_t, modality)  # depth x (N, Dt)
            fixed = model.prompted_text_states(constant[modality].expand(len(p), -1, -1), modality)
            emb = model.encode(images[modality], modality)
            with fixed_text_prompts(model, constant):
                emb_fixed = model.encode(images[modality], modality)
            changes[modality] = {
                "W_l": [_rel_change(f, o) for f, o in zip(fixed, own)],
                "V_ms_l": [_rel_change(f, o) for f, o in zip(model.layer_prompter(fixed), model.layer_prompter(own))],
                "embedding_mean_cos": float((emb * emb_fixed).sum(-1).mean()),
                "embedding_rel_spread": rel_spread(emb)}
        stats["replaced_by"][kind] = changes
    return stats, means


_BLOCKS = {"B_t": "text_prompter.", "B_v": "template_prompter.", "B_vt": "layer_prompter.",
           "LayerNorms (vision)": "clip.visual.", "LayerNorms (text)": "clip.transformer."}


def gradient_norms(model, train_split, batches: int, batch_size: int, seed: int = 0) -> dict[str, Any]:
    """Mean over `batches` training batches (no optimiser step, no augmentation) of the gradient
    norm of the objective without L_cjs (whose solver a checkpoint does not hold) w.r.t. each
    trainable block's parameters, and w.r.t. T (per image)."""
    from torch.utils.data import DataLoader

    from splip_engine.data.datasets import TripletDataset, collate_skip_bad
    from splip_engine.data.sampler import TripletSampler
    from splip_engine.data.transforms import PreprocessSpec, eval_transform
    from splip_engine.losses import SpLIPLoss

    spec = PreprocessSpec.for_model(model)
    dataset = TripletDataset(train_split, eval_transform("sketch", spec), eval_transform("photo", spec))
    sampler = TripletSampler(train_split, seed=seed, num_triplets=batches * batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_skip_bad)
    names = list(train_split.classes)
    criterion = SpLIPLoss(dataclasses.replace(model.cfg, beta=0.0), sketch_text_emb=model.class_text_embeddings(names, "a sketch of a {}"),
                          photo_text_emb=model.class_text_embeddings(names, "a photo of a {}"),
                          logit_scale=float(model.clip.logit_scale.exp()), vision_width=model.vision_width)
    generator = torch.Generator().manual_seed(seed)
    t_outputs: list[torch.Tensor] = []

    def keep_t(module, args, output: torch.Tensor) -> None:
        output.retain_grad()
        t_outputs.append(output)

    hook = model.text_prompter.register_forward_hook(keep_t) if model.text_prompter is not None else None
    totals: dict[str, float] = {}
    steps = 0
    try:
        for batch in loader:
            if batch["size"] < 2:
                continue
            t_outputs.clear()
            model.zero_grad(set_to_none=True)
            encoded = {k: model.encode_with_tokens(batch[k], "sketch" if k == "sketch" else "photo")
                       for k in ("sketch", "positive", "negative")}
            perm_labels, _ = criterion.sample_permutations(batch["size"], generator)
            losses = criterion(encoded["sketch"][0], encoded["positive"][0], encoded["negative"][0],
                               labels=batch["label"], negative_labels=batch["negative_label"],
                               sketch_tokens=encoded["sketch"][1], positive_tokens=encoded["positive"][1],
                               negative_tokens=encoded["negative"][1], shuffled_tokens=None, perm_labels=perm_labels,
                               fine_grained=False)
            losses["loss"].backward()
            for block, prefix in _BLOCKS.items():
                grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None]
                if grads:
                    totals[block] = totals.get(block, 0.0) + float(torch.cat([g.flatten() for g in grads]).norm())
            if t_outputs:
                per_image = torch.cat([t.grad.flatten(1).norm(dim=1) for t in t_outputs if t.grad is not None])
                totals["T (per image)"] = totals.get("T (per image)", 0.0) + float(per_image.mean())
            totals["loss"] = totals.get("loss", 0.0) + float(losses["loss"].detach())
            steps += 1
    finally:
        if hook is not None:
            hook.remove()
        model.zero_grad(set_to_none=True)
    if not steps:
        raise SpLIPError("no training batch of 2 or more triplets: the seen classes hold too few images")
    return {"batches": steps, "batch_size": batch_size, **{k: v / steps for k, v in totals.items()}}


def diagnose(model, train_config, max_images: int = 256, grad_batches: int = 4, batch_size: int = 32,
             evaluate: bool = True) -> dict[str, Any]:
    """All of the above for `model` (a SpLIP with B_t) on `train_config`'s dataset: T statistics on
    the unseen classes' sketches and photos, ZS / GZS metrics with T as trained and with T = T̄, and
    gradient norms on batches of the seen classes' training part."""
    from splip_engine.data.transforms import PreprocessSpec

    if model.text_prompter is None:
        raise SpLIPError(f"this model has no B_t (mapping blocks: {list(model.cfg.mapping_blocks)}): nothing to diagnose")
    model.eval()
    folder = train_config.data_source().open_folder()
    seen, unseen = folder.split_classes(train_config.split)
    spec = PreprocessSpec.for_model(model)
    images = {m: load_images(folder.subset(unseen), m, spec, max_images) for m in ("sketch", "photo")}
    stats, means = prompt_statistics(model, images)
    if evaluate:
        stats["retrieval"] = _retrieval_with_and_without_t(model, means, folder, seen, unseen)
    train_split, _ = folder.held_out(seen, train_config.val_fraction, seed=train_config.seed)
    stats["gradient_norms"] = gradient_norms(model, train_split, grad_batches, batch_size, seed=train_config.seed)
    stats["config"] = {"model": model.cfg.to_dict(), "train": dataclasses.asdict(train_config)}
    return stats


def _retrieval_with_and_without_t(model, means, folder, seen, unseen) -> dict[str, dict[str, float]]:
    from splip_engine.protocol import evaluate_protocol
    from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest

    def score() -> dict[str, float]:
        metrics = evaluate_protocol(TorchEncoder(model, model_manifest(model)), folder.subset(unseen),
                                    folder.subset(seen), modes=("zs", "gzs"))
        return {"zs_map_all": metrics["zs"]["map_all"], "gzs_map_all": metrics["gzs"]["map_all"]}

    scores = {"T per image": score()}
    for kind, constant in means.items():
        with fixed_text_prompts(model, constant):
            scores[f"T = {kind}"] = score()
    return scores


def format_report(stats: dict[str, Any]) -> str:
    """The numbers of `diagnose` as a few readable lines."""
    spread = stats["rel_spread"]
    lines = ["relative spread over images (mean ||x_i - mean|| / ||mean||): " + ", ".join(spread)]
    lines += [f"  {stage:<34} " + " ".join(f"{spread[group][stage]:8.4f}" for group in spread) for stage in spread["all"]]
    lines.append(f"|T| per token {stats['T_norm_per_token']:.3f} vs template word embeddings "
                 f"{stats['word_embedding_norm_per_token']:.3f}")
    for kind, changes in stats["replaced_by"].items():
        lines.append(f"T -> {kind}: relative change per layer")
        for modality, c in changes.items():
            lines.append(f"  {modality} W_l:    " + " ".join(f"{v:.2e}" for v in c["W_l"]))
            lines.append(f"  {modality} V_ms,l: " + " ".join(f"{v:.2e}" for v in c["V_ms_l"]))
            lines.append(f"  {modality} embedding: mean cos(own T, constant T) {c['embedding_mean_cos']:.6f} "
                         f"(embedding spread {c['embedding_rel_spread']:.3f})")
    for name, metrics in stats.get("retrieval", {}).items():
        lines.append(f"{name}: ZS mAP@all {100 * metrics['zs_map_all']:.2f}, GZS {100 * metrics['gzs_map_all']:.2f}")
    grads = stats["gradient_norms"]
    lines.append(f"gradient norms (mean over {grads['batches']} batches of {grads['batch_size']}): " + ", ".join(
        f"{k} {v:.3e}" for k, v in grads.items() if k not in ("batches", "batch_size", "loss")))
    return "\n".join(lines)
