"""Generation settings every equigen command uses unless told otherwise (one place for each).

Kept free of heavy imports so configs and the CLI can read them without importing torch.
"""

# The mini-world model follows named attributes at this scale (bench/world_quality.py);
# real Stable Diffusion is usually run at 7.5 (pass --guidance / guidance_scale).
DEFAULT_GUIDANCE_SCALE = 4.0
# Sampler steps (DPM-Solver multistep on the mini-world).
DEFAULT_STEPS = 25
