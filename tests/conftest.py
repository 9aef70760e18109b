import os

# Tests never reach the network: huggingface libraries read these at import time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random-weight tiny Stable Diffusion (CLIP text encoder) saved as a diffusers folder."""
    from equigen.models.tiny import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-sd")
    build_tiny_pipeline(seed=0).save_pretrained(folder)
    return folder
