"""StableRep's losses: the multi-positive contrastive loss and StableRep+'s image-text term.

Multi-positive contrastive loss (Tian et al. 2023, eq. 2). A batch holds n captions x m images;
every image is an anchor ``a``, every other image of the (global) batch a candidate ``b_i``, all
L2-normalised::

    q_i = exp(a.b_i / tau) / sum_{j != a} exp(a.b_j / tau)          (self excluded)
    p_i = 1[caption(i) == caption(a), i != a] / #positives(a)
    L_mp = mean_a H(p, q) = mean_a -sum_i p_i log q_i

With one caption per pair of views (m = 2) this is SimCLR's NT-Xent. StableRep+ adds a CLIP-style
image-text loss with a learnable logit scale s (init log(1/0.07), exp(s) clamped at 100)::

    L = L_mp + w * (L_i2t + L_t2i),   w = 0.5

Distributed training (torch.distributed initialised, world size W > 1): each rank computes the
loss of its *local* anchors against the *gathered* rows of all ranks, gathered with gradient
(``torch.distributed.nn.functional.all_gather``, whose backward sums the incoming gradients over
ranks). The reduction is the local mean, so the gradient reaching a rank's local features is
``sum_s dL_s/dx_r = W * dL_global/dx_r``; DDP then averages parameter gradients over ranks
(divides by W), which yields exactly the gradient of the global mean loss. Do not divide or
multiply the loss by W yourself. Local batch sizes must be equal on every rank (checked).
Caption ids are global: the same id on two ranks is the same caption, so its images are positives
of each other wherever they land.

On one process (or without torch.distributed) nothing is gathered and no process group is needed.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ImageTextContrastiveLoss", "MultiPositiveContrastiveLoss", "StableRepPlusLoss",
           "gather_no_grad", "gather_with_grad"]


def _rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_equal_shapes(x: Tensor, world: int) -> None:
    """Raise ValueError on every rank at once if ranks hold tensors of different shapes.

    The shapes themselves are all-gathered, so every rank sees the same table and raises together
    (instead of one rank raising and the others hanging in the next collective).
    """
    shape = torch.tensor(list(x.shape), dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    table = [tuple(s.tolist()) for s in shapes]
    if any(s != table[0] for s in table):
        raise ValueError(
            f"ranks hold tensors of different shapes {table}; the contrastive losses need the "
            "same local batch size on every rank (use drop_last=True in the sampler)")


def gather_with_grad(x: Tensor, check_shapes: bool = True) -> Tensor:
    """Concatenate ``x`` (B, ...) from all ranks along dim 0, keeping the autograd graph.

    The backward pass sums each rank's gradient for every slice and sends it to the rank that
    owns it. Returns ``x`` itself on one process or when torch.distributed is not initialised.
    ``check_shapes`` first verifies every rank holds the same shape (one extra tiny collective).
    """
    _, world = _rank_and_world()
    if world == 1:
        return x
    if check_shapes:
        _check_equal_shapes(x, world)
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_no_grad(x: Tensor, check_shapes: bool = True) -> Tensor:
    """Concatenate ``x`` (B, ...) from all ranks along dim 0, without gradient (labels, ids).

    Returns ``x`` itself on one process or when torch.distributed is not initialised.
    """
    _, world = _rank_and_world()
    if world == 1:
        return x
    if check_shapes:
        _check_equal_shapes(x, world)
    x = x.detach().contiguous()
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x)
    return torch.cat(out, dim=0)


def _soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """mean_rows -sum_cols targets * log_softmax(logits); columns with target 0 never contribute
    (so -inf logits there are safe)."""
    log_q = F.log_softmax(logits, dim=1)
    log_q = torch.where(targets > 0, log_q, torch.zeros_like(log_q))  # no 0 * -inf
    return -(targets * log_q).sum(dim=1).mean()


def _check_batch(features: Tensor, caption_ids: Tensor, name: str = "features") -> None:
    if features.dim() != 2:
        raise ValueError(f"{name} must be (batch, dim), got shape {tuple(features.shape)}")
    if caption_ids.dim() != 1 or caption_ids.shape[0] != features.shape[0]:
        raise ValueError(f"caption_ids must be ({features.shape[0]},) to match {name}, got shape "
                         f"{tuple(caption_ids.shape)}")
    if caption_ids.is_floating_point() or caption_ids.is_complex():
        raise ValueError(f"caption_ids must be integers, got dtype {caption_ids.dtype}")


class MultiPositiveContrastiveLoss(nn.Module):
    """StableRep's multi-positive contrastive loss (see the module docstring for the formula).

    Args:
        tau: softmax temperature (0.1 in the paper).

    Forward: ``features`` (B, D) float, ``caption_ids`` (B,) integer -> scalar loss, the mean over
    the local anchors. Every caption must have at least 2 images in the (global) batch, otherwise
    its images have no positive and ValueError is raised (on every rank at once).
    """

    def __init__(self, tau: float = 0.1) -> None:
        super().__init__()
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.tau = tau

    def extra_repr(self) -> str:
        return f"tau={self.tau}"

    def forward(self, features: Tensor, caption_ids: Tensor) -> Tensor:
        _check_batch(features, caption_ids)
        rank, _ = _rank_and_world()
        n_local = features.shape[0]
        feats = F.normalize(features, dim=1)
        all_feats = gather_with_grad(feats)  # (N, D), checks equal local shapes
        all_ids = gather_no_grad(caption_ids, check_shapes=False)  # (N,)

        # Checked on the gathered ids, identical on every rank: all ranks raise together.
        ids, counts = torch.unique(all_ids, return_counts=True)
        if bool((counts < 2).any()):
            lonely = ids[counts < 2][:10].tolist()
            raise ValueError(
                f"{int((counts < 2).sum())} caption(s) have a single image in the batch (ids "
                f"{lonely}...): each anchor needs a positive, so the batch sampler must draw "
                "m >= 2 images per caption")

        rows = torch.arange(n_local, device=features.device)
        self_mask = torch.zeros(n_local, all_feats.shape[0], dtype=torch.bool,
                                device=features.device)
        self_mask[rows, rank * n_local + rows] = True

        logits = (feats @ all_feats.T / self.tau).masked_fill(self_mask, float("-inf"))
        positives = (caption_ids[:, None] == all_ids[None, :]) & ~self_mask
        p = positives.to(logits.dtype)
        p = p / p.sum(dim=1, keepdim=True)
        return _soft_cross_entropy(logits, p)


class ImageTextContrastiveLoss(nn.Module):
    """CLIP's symmetric image-text loss, 0.5 (CE(i2t) + CE(t2i)), with a learnable logit scale.

    logits_i2t = exp(s) * img @ all_txt.T and logits_t2i = exp(s) * txt @ all_img.T, both
    L2-normalised; local rows against columns gathered (with gradient) from all ranks, like
    open_clip's ``ClipLoss(local_loss=True, gather_with_grad=True)``. Row j's target is column
    rank * B + j; the label vector is cached per (device, B, rank offset).

    ``text_features`` holds one row per image (the text of that image's caption). Without
    ``caption_ids`` every other row is a negative, as in CLIP - including other images' copies of
    the same caption, which then have identical logits and put a floor of log(m) under the loss.
    With ``caption_ids`` (as StableRep+ uses it) the targets are multi-positive: image a's target
    is uniform over all texts of its caption, text a's over all images of its caption. With unique
    ids the two coincide.

    Args:
        init_logit_scale: initial value of the parameter s (log(1/0.07)).
        max_logit_scale: exp(s) is clamped at this value (100) in the forward pass. The parameter
            itself is not clamped; clamp it after the optimizer step (as open_clip does) if it
            should never drift above log(max_logit_scale).
        learnable_logit_scale: whether s is an ``nn.Parameter`` (else a buffer).
    """

    def __init__(self, init_logit_scale: float = math.log(1 / 0.07),
                 max_logit_scale: float = 100.0, learnable_logit_scale: bool = True) -> None:
        super().__init__()
        scale = torch.tensor(float(init_logit_scale))
        if learnable_logit_scale:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        self.max_logit_scale = max_logit_scale
        self._labels: dict[tuple[torch.device, int, int], Tensor] = {}

    def extra_repr(self) -> str:
        return f"max_logit_scale={self.max_logit_scale}"

    @property
    def scale(self) -> Tensor:
        """The multiplier actually applied to the cosine similarities: min(exp(s), max)."""
        return self.logit_scale.exp().clamp(max=self.max_logit_scale)

    def _labels_for(self, device: torch.device, n_local: int, offset: int) -> Tensor:
        key = (device, n_local, offset)
        if key not in self._labels:
            self._labels[key] = torch.arange(n_local, device=device) + offset
        return self._labels[key]

    def forward(self, image_features: Tensor, text_features: Tensor,
                caption_ids: Tensor | None = None) -> Tensor:
        if image_features.dim() != 2 or image_features.shape != text_features.shape:
            raise ValueError("image_features and text_features must both be (batch, dim) with one "
                             f"text row per image, got {tuple(image_features.shape)} and "
                             f"{tuple(text_features.shape)}")
        if caption_ids is not None:
            _check_batch(image_features, caption_ids, "image_features")
        rank, _ = _rank_and_world()
        n_local = image_features.shape[0]
        img = F.normalize(image_features, dim=1)
        txt = F.normalize(text_features, dim=1)
        all_img = gather_with_grad(img)
        all_txt = gather_with_grad(txt, check_shapes=False)  # same shape as img, checked above
        scale = self.scale.to(img.dtype)
        logits_i2t = scale * img @ all_txt.T
        logits_t2i = scale * txt @ all_img.T

        if caption_ids is None:
            labels = self._labels_for(img.device, n_local, rank * n_local)
            return 0.5 * (F.cross_entropy(logits_i2t, labels)
                          + F.cross_entropy(logits_t2i, labels))
        all_ids = gather_no_grad(caption_ids, check_shapes=False)
        targets = (caption_ids[:, None] == all_ids[None, :]).to(img.dtype)
        targets = targets / targets.sum(dim=1, keepdim=True)  # >= 1: its own column
        return 0.5 * (_soft_cross_entropy(logits_i2t, targets)
                      + _soft_cross_entropy(logits_t2i, targets))


class StableRepPlusLoss(nn.Module):
    """StableRep+: L = L_mp(images) + text_weight * (L_i2t + L_t2i).

    With the default text_weight 0.5 the image-text part is exactly CLIP's symmetric loss
    0.5 (L_i2t + L_t2i) = ``ImageTextContrastiveLoss``. Caption ids are passed to both terms, so
    images of the same caption are positives of each other and of each other's texts.

    Forward returns a dict with ``loss`` (to backpropagate), ``multi_positive`` and
    ``image_text`` (both detached, for logging).
    """

    def __init__(self, tau: float = 0.1, text_weight: float = 0.5,
                 init_logit_scale: float = math.log(1 / 0.07),
                 max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.text_weight = text_weight
        self.multi_positive = MultiPositiveContrastiveLoss(tau)
        self.image_text = ImageTextContrastiveLoss(init_logit_scale, max_logit_scale)

    def extra_repr(self) -> str:
        return f"text_weight={self.text_weight}"

    def forward(self, image_features: Tensor, text_features: Tensor,
                caption_ids: Tensor) -> dict[str, Tensor]:
        mp = self.multi_positive(image_features, caption_ids)
        # image_text returns 0.5 (L_i2t + L_t2i); rescale so the weight multiplies the sum.
        it_sum = 2.0 * self.image_text(image_features, text_features, caption_ids)
        return {"loss": mp + self.text_weight * it_sum,
                "multi_positive": mp.detach(), "image_text": (0.5 * it_sum).detach()}
