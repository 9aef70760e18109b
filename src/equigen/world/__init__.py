"""The mini-world: a procedural world where bias has ground truth.

``world.yaml`` declares every attribute (skin tone, region, occupation, setting, style), how each
looks and is described, and the distributions (``web``, ``curated``, ``balanced``, ``probe``)
with their skews. :func:`render` draws a scene, :func:`caption` describes it,
:func:`sample_rows` samples a distribution and :func:`export_distribution` writes it as a
captioned dataset.
"""

from equigen.world.captions import Caption, caption, generic_caption
from equigen.world.distributions import declared, default_size, sample_rows, sample_scenes
from equigen.world.export import export_distribution
from equigen.world.render import render
from equigen.world.scene import STYLES, Scene, WorldSpec, load_world

__all__ = [
    "STYLES",
    "Caption",
    "Scene",
    "WorldSpec",
    "caption",
    "declared",
    "default_size",
    "export_distribution",
    "generic_caption",
    "load_world",
    "render",
    "sample_rows",
    "sample_scenes",
]
