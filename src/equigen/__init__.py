"""equigen: equitable text-to-image generation and learning from synthetic images.

Audit a text-to-image model's demographic and cultural representation, repair it (Fair Mapping,
SCoFT), learn visual representations from its images (StableRep), and compare before and after.
"""

__version__ = "0.1.0"
