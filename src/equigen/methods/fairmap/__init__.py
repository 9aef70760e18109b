"""Fair Mapping (Li et al., arXiv 2311.17695): a small linear map on a frozen text encoder's output
that makes neutral prompts equidistant from their group-specific variants.

    from equigen.methods.fairmap import FairMapping, train_fairmap
    mapping = FairMapping.load("runs/fairmap")
    images = generate_images(pipe, prompts, seeds, prompt_encoder=mapping.encode)
"""

from equigen.methods.fairmap.losses import fair_distance_penalty, text_consistency
from equigen.methods.fairmap.mapping import FairMap, FairMapping, KeywordDetector
from equigen.methods.fairmap.prompts import FairMapConfig, PromptTriples, build_prompts
from equigen.methods.fairmap.train import train_fairmap

__all__ = ["FairMap", "FairMapConfig", "FairMapping", "KeywordDetector", "PromptTriples",
           "build_prompts", "fair_distance_penalty", "text_consistency", "train_fairmap"]
