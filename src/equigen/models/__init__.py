"""Text-to-image pipelines (one loader), tiny random-weight builders for tests, feature extractors."""

from equigen.models.loading import (
    compile_unet,
    load_pipeline,
    pick_device,
    pick_dtype,
    resolve_model_source,
)

__all__ = ["compile_unet", "load_pipeline", "pick_device", "pick_dtype", "resolve_model_source"]
