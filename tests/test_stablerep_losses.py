"""StableRep losses: against slow references, NT-Xent, CLIP by hand, and a 2-process gloo run."""

from __future__ import annotations

import math
import os
import socket
from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F

from equigen.methods.stablerep import (
    ImageTextContrastiveLoss,
    MultiPositiveContrastiveLoss,
    StableRepPlusLoss,
    gather_no_grad,
    gather_with_grad,
)

DT = torch.float64


def _batch(sizes: list[int], dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random features for captions with the given numbers of images, rows shuffled."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.full((m,), c, dtype=torch.long) for c, m in enumerate(sizes)])
    perm = torch.randperm(len(ids), generator=g)
    return torch.randn(len(ids), dim, generator=g, dtype=DT), ids[perm]


def slow_multi_positive(features: torch.Tensor, ids: torch.Tensor, tau: float) -> float:
    """The DESIGN.md formula with Python floats and loops: mean_a -sum_i p_i log q_i."""
    rows = [[float(v) for v in row] for row in features]
    rows = [[v / math.sqrt(sum(w * w for w in row)) for v in row] for row in rows]
    labels = [int(i) for i in ids]
    total = 0.0
    for a, anchor in enumerate(rows):
        others = [i for i in range(len(rows)) if i != a]
        sims = {i: sum(x * y for x, y in zip(anchor, rows[i])) / tau for i in others}
        log_z = math.log(sum(math.exp(s) for s in sims.values()))
        positives = [i for i in others if labels[i] == labels[a]]
        total += -sum((1.0 / len(positives)) * (sims[i] - log_z) for i in positives)
    return total / len(rows)


def clip64(scale: float, **kwargs) -> ImageTextContrastiveLoss:
    """An image-text loss in float64 with exp(logit_scale) == scale exactly (the float32
    initial parameter would round log(scale) at ~1e-8)."""
    loss = ImageTextContrastiveLoss(**kwargs).double()
    with torch.no_grad():
        loss.logit_scale.fill_(math.log(scale))
    return loss


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """SimCLR's NT-Xent in the standard 2N form: row i's positive is i + N (mod 2N)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = (z @ z.T) / tau
    sim = sim - torch.eye(2 * n, dtype=sim.dtype) * 1e9  # drop self-similarity
    target = (torch.arange(2 * n) + n) % (2 * n)
    return F.cross_entropy(sim, target)


# --------------------------------------------------------------------------- multi-positive


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_multi_positive_matches_slow_reference(tau):
    features, ids = _batch([2, 3, 4, 3], seed=1)
    got = MultiPositiveContrastiveLoss(tau)(features, ids)
    assert got.dtype == DT and got.dim() == 0
    assert got.item() == pytest.approx(slow_multi_positive(features, ids, tau), abs=1e-6, rel=0)


def test_multi_positive_equals_nt_xent_with_two_views():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(6, 16, generator=g, dtype=DT), torch.randn(6, 16, generator=g, dtype=DT)
    ids = torch.cat([torch.arange(6), torch.arange(6)])
    got = MultiPositiveContrastiveLoss(0.1)(torch.cat([z1, z2]), ids)
    torch.testing.assert_close(got, nt_xent(z1, z2, 0.1), atol=1e-6, rtol=0)


def test_multi_positive_invariant_to_batch_order():
    features, ids = _batch([3, 3, 3, 3], seed=3)
    loss = MultiPositiveContrastiveLoss()
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(4))
    assert not torch.equal(perm, torch.arange(len(ids)))
    torch.testing.assert_close(loss(features[perm], ids[perm]), loss(features, ids),
                               atol=1e-12, rtol=0)
    # ...and depends on which rows share a caption: the check is not vacuous.
    assert abs(loss(features, ids[perm]).item() - loss(features, ids).item()) > 1e-3


def test_multi_positive_gradient_and_large_inputs():
    features, ids = _batch([2, 2, 3], seed=5)
    features.requires_grad_(True)
    MultiPositiveContrastiveLoss()(features, ids).backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
    big = (features.detach() * 1e6).float().requires_grad_(True)
    loss = MultiPositiveContrastiveLoss(0.01)(big, ids)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big.grad).all()
    # Scale-free: features are normalised first.
    torch.testing.assert_close(MultiPositiveContrastiveLoss()(features.detach() * 1e6, ids),
                               MultiPositiveContrastiveLoss()(features.detach(), ids))


def test_multi_positive_rejects_anchor_without_positive():
    features, ids = _batch([2, 1, 3], seed=6)
    with pytest.raises(ValueError, match=r"single image.*m >= 2"):
        MultiPositiveContrastiveLoss()(features, ids)
    with pytest.raises(ValueError, match="caption_ids"):
        MultiPositiveContrastiveLoss()(features, ids[:-1])
    with pytest.raises(ValueError, match="tau"):
        MultiPositiveContrastiveLoss(0.0)


def test_gather_is_identity_without_process_group():
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x and gather_no_grad(x) is x


# --------------------------------------------------------------------------- image-text


def test_image_text_matches_hand_computed_clip_3x3():
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 2.0]], dtype=DT)
    txt = torch.tensor([[3.0, 1.0], [1.0, 1.0], [-1.0, 2.0]], dtype=DT)
    scale = 1 / 0.07
    loss = clip64(scale)
    logits = scale * F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T
    labels = torch.tensor([0, 1, 2])
    want = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    torch.testing.assert_close(loss(img, txt), want, atol=1e-10, rtol=0)
    # Unique caption ids give the same targets as plain CLIP.
    torch.testing.assert_close(loss(img, txt, torch.tensor([7, 3, 5])), want, atol=1e-10, rtol=0)


def test_image_text_multi_positive_targets_match_reference():
    g = torch.Generator().manual_seed(7)
    img, txt = torch.randn(5, 4, generator=g, dtype=DT), torch.randn(5, 4, generator=g, dtype=DT)
    ids = torch.tensor([0, 1, 0, 2, 1])
    loss = clip64(5.0)
    logits = 5.0 * F.normalize(img, dim=1) @ F.normalize(txt, dim=1).T
    total = 0.0
    for side in (logits, logits.T):
        logp = side.log_softmax(dim=1)
        for a in range(5):
            same = [i for i in range(5) if ids[i] == ids[a]]
            total += -sum(logp[a, i].item() for i in same) / len(same) / 5
    assert loss(img, txt, ids).item() == pytest.approx(0.5 * total, abs=1e-10)
    assert abs(loss(img, txt).item() - 0.5 * total) > 1e-3  # duplicates as negatives differ


def test_logit_scale_is_learnable_initialised_and_clamped():
    loss = ImageTextContrastiveLoss()
    assert isinstance(loss.logit_scale, torch.nn.Parameter)
    assert loss.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    img, txt = torch.randn(4, 3, dtype=DT), torch.randn(4, 3, dtype=DT)
    loss.double()(img, txt).backward()
    assert loss.logit_scale.grad is not None and loss.logit_scale.grad.abs() > 0

    with torch.no_grad():
        loss.logit_scale.fill_(math.log(1000.0))
    assert loss.scale.item() == pytest.approx(100.0)
    torch.testing.assert_close(loss(img, txt), clip64(100.0)(img, txt), atol=1e-10, rtol=0)
    assert abs(loss(img, txt).item() - clip64(1000.0, max_logit_scale=1e4)(img, txt).item()) > 1e-3
    assert "logit_scale" not in dict(ImageTextContrastiveLoss(
        learnable_logit_scale=False).named_parameters())


def test_stablerep_plus_combines_terms():
    features, ids = _batch([2, 3, 2], seed=8)
    text = torch.randn(len(ids), 8, dtype=DT)[ids]  # one text row per caption, repeated
    for weight in (0.5, 2.0):
        combo = StableRepPlusLoss(text_weight=weight).double()
        out = combo(features, text, ids)
        mp = MultiPositiveContrastiveLoss()(features, ids)
        clip = ImageTextContrastiveLoss().double()(features, text, ids)  # = 0.5 (i2t + t2i)
        torch.testing.assert_close(out["loss"], mp + weight * 2 * clip, atol=1e-10, rtol=0)
        torch.testing.assert_close(out["multi_positive"], mp)
        torch.testing.assert_close(out["image_text"], clip)
    # DESIGN default: L_mp + 0.5 (L_i2t + L_t2i) = L_mp + CLIP loss.
    torch.testing.assert_close(StableRepPlusLoss().double()(features, text, ids)["loss"],
                               mp + clip, atol=1e-10, rtol=0)


# --------------------------------------------------------------------------- 2 processes (gloo)

WORLD = 2
GLOBAL_SIZES = [3, 2, 4, 3]  # 12 images, shuffled: captions straddle both ranks


def _global_batch():
    features, ids = _batch(GLOBAL_SIZES, dim=6, seed=11)
    text = torch.randn(len(ids), 6, generator=torch.Generator().manual_seed(12), dtype=DT)
    return features, text, ids


def _losses(features, text, ids):
    """Every loss the distributed test checks, for the given (local or global) rows."""
    clip = ImageTextContrastiveLoss(init_logit_scale=math.log(10.0)).double()
    clip_ids = ImageTextContrastiveLoss(init_logit_scale=math.log(10.0)).double()
    losses = {"mp": MultiPositiveContrastiveLoss(0.1)(features, ids),
              "clip": clip(features, text),
              "clip_ids": clip_ids(features, text, ids)}
    return losses, {"clip": clip, "clip_ids": clip_ids}


def _worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=30))
    try:
        features, text, ids = _global_batch()
        n = len(ids) // WORLD
        local = slice(rank * n, (rank + 1) * n)
        result = {}
        for name in ("mp", "clip", "clip_ids"):
            f = features[local].clone().requires_grad_(True)
            t = text[local].clone().requires_grad_(True)
            losses, modules = _losses(f, t, ids[local])
            losses[name].backward()
            result[name] = {"loss": losses[name].detach(), "grad_f": f.grad,
                            "grad_t": t.grad if t.grad is not None else torch.zeros_like(t)}
            if name in modules:
                result[name]["grad_scale"] = modules[name].logit_scale.grad
        # Errors are raised on every rank together, not on one rank while the other hangs.
        errors = {}
        for what, rows in (("uneven", slice(0, 6 - rank)), ("lonely", local)):
            bad_ids = ids[rows].clone()
            if what == "lonely" and rank == 1:
                bad_ids[0] = 99
            try:
                MultiPositiveContrastiveLoss()(features[rows], bad_ids)
                errors[what] = ""
            except ValueError as e:
                errors[what] = str(e)
        result["errors"] = errors
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        # gloo aborts a process that tears its group down while the peer still talks to it
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(90)
def test_two_process_gather_matches_one_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    features, text, ids = _global_batch()
    n = len(ids) // WORLD
    for name in ("mp", "clip", "clip_ids"):
        f = features.clone().requires_grad_(True)
        t = text.clone().requires_grad_(True)
        losses, modules = _losses(f, t, ids)
        losses[name].backward()
        # The global mean over anchors is the mean of the per-rank local means.
        mean_loss = sum(r[name]["loss"] for r in ranks) / WORLD
        torch.testing.assert_close(mean_loss, losses[name].detach(), atol=1e-6, rtol=0)
        # all_gather's backward sums every rank's gradient into the owner of the rows, so the
        # local grad is W x the gradient of the global mean loss; DDP's averaging divides by W.
        for r, res in enumerate(ranks):
            rows = slice(r * n, (r + 1) * n)
            torch.testing.assert_close(res[name]["grad_f"] / WORLD, f.grad[rows],
                                       atol=1e-6, rtol=0)
            if name != "mp":
                torch.testing.assert_close(res[name]["grad_t"] / WORLD, t.grad[rows],
                                           atol=1e-6, rtol=0)
            # Sanity: the factor W is real (the grads are not all ~0).
            assert (res[name]["grad_f"] - f.grad[rows]).abs().max() > 1e-4
        if name in modules:  # a replicated parameter: DDP's average over ranks is exact.
            avg = sum(r[name]["grad_scale"] for r in ranks) / WORLD
            torch.testing.assert_close(avg, modules[name].logit_scale.grad, atol=1e-6, rtol=0)

    for r in ranks:
        assert "same local batch size" in r["errors"]["uneven"]
        assert "single image" in r["errors"]["lonely"]
