"""StableRep (Tian et al., NeurIPS 2023, arXiv 2306.00984): learn visual representations from
synthetic images, treating all images generated from one caption as positives of each other.

    from equigen.methods.stablerep import MultiPositiveContrastiveLoss, StableRepPlusLoss
    loss = MultiPositiveContrastiveLoss(tau=0.1)(features, caption_ids)

The losses run unchanged on one device (no process group needed) and under torch.distributed,
where features are gathered across ranks with gradient.
"""

from equigen.methods.stablerep.losses import (
    ImageTextContrastiveLoss,
    MultiPositiveContrastiveLoss,
    StableRepPlusLoss,
    gather_no_grad,
    gather_with_grad,
)

__all__ = ["ImageTextContrastiveLoss", "MultiPositiveContrastiveLoss", "StableRepPlusLoss",
           "gather_no_grad", "gather_with_grad"]
