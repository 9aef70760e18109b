import time

import numpy as np
import pytest
import torch

from equigen.errors import EquigenError
from equigen.models import load_pipeline, pick_device, pick_dtype, resolve_model_source
from equigen.models.tiny import build_tiny_pipeline, clip_tokenizer_from_open_clip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sd")
    build_tiny_pipeline(seed=0).save_pretrained(folder, safe_serialization=True)
    return folder


def test_save_load_generate_two_images_at_64px_under_10s(tiny_dir):
    start = time.perf_counter()
    pipe = load_pipeline(tiny_dir, device="cpu")
    result = pipe(
        ["a photo of a doctor", "a street in Avel"],
        num_inference_steps=10,
        height=64,
        width=64,
        generator=torch.Generator().manual_seed(0),
    )
    elapsed = time.perf_counter() - start
    assert [im.size for im in result.images] == [(64, 64), (64, 64)]
    assert elapsed < 10, f"load + generate took {elapsed:.1f} s"
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"


def test_loaded_weights_equal_saved_weights(tiny_dir):
    original = build_tiny_pipeline(seed=0)
    loaded = load_pipeline(tiny_dir)
    for name in ("unet", "vae", "text_encoder"):
        a = getattr(original, name).state_dict()
        b = getattr(loaded, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_generation_is_seeded(tiny_dir):
    pipe = load_pipeline(tiny_dir)

    def run(seed):
        out = pipe("a chef", num_inference_steps=4, height=64, width=64, output_type="np",
                   generator=torch.Generator().manual_seed(seed))
        return out.images

    assert np.array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_slicing_options_apply(tiny_dir):
    pipe = load_pipeline(tiny_dir, attention_slicing=True, vae_slicing=True)
    assert pipe.vae.use_slicing


def test_sampler_swaps_the_scheduler_on_the_same_noise_schedule(tiny_dir):
    own = load_pipeline(tiny_dir)
    pipe = load_pipeline(tiny_dir, sampler="euler-a")
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    assert torch.allclose(pipe.scheduler.alphas_cumprod, own.scheduler.alphas_cumprod)
    assert pipe.scheduler.config.prediction_type == own.scheduler.config.prediction_type

    def run(generator_seed):  # an ancestral sampler draws fresh noise each step: still seeded
        return pipe("a chef", num_inference_steps=4, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(generator_seed)).images

    assert np.array_equal(run(3), run(3))


def test_unknown_sampler_is_refused_before_loading(tmp_path):
    with pytest.raises(EquigenError, match="'dpm' is not one of: dpm\\+\\+2m, euler-a"):
        load_pipeline(tmp_path / "nowhere", sampler="dpm")


def test_missing_hub_model_fails_fast_and_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    start = time.perf_counter()
    with pytest.raises(EquigenError) as err:
        load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert time.perf_counter() - start < 2
    msg = str(err.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in msg
    assert "--allow-download" in msg and "hf download" in msg


def test_missing_folder_and_folder_without_index(tmp_path):
    with pytest.raises(EquigenError, match="no such folder"):
        resolve_model_source(tmp_path / "nothing" / "here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EquigenError, match="has no model_index.json"):
        resolve_model_source(tmp_path / "empty")


def test_pickle_weights_are_refused(tmp_path):
    folder = tmp_path / "pickled"
    build_tiny_pipeline(seed=0).save_pretrained(folder, safe_serialization=False)
    assert list(folder.glob("unet/*.bin")) and not list(folder.glob("unet/*.safetensors"))
    with pytest.raises(EquigenError, match="could not load model"):
        load_pipeline(folder)


def test_device_and_dtype_choice():
    cpu = pick_device("cpu")
    assert cpu.type == "cpu"
    assert pick_dtype(None, cpu) == torch.float32
    assert pick_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(EquigenError, match="not one of"):
        pick_dtype("fp8", cpu)
    if not torch.cuda.is_available():
        assert pick_device().type == "cpu"
        with pytest.raises(EquigenError, match="CUDA is not available"):
            pick_device("cuda")


def test_clip_tokenizer_matches_open_clip_ids():
    import open_clip

    tokenizer = clip_tokenizer_from_open_clip()
    text = "a photo of a doctor from Avel, at the market!"
    ours = tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids
    theirs = open_clip.tokenize([text])[0].tolist()
    n = theirs.index(49407) + 1  # open_clip pads with 0, CLIP's HF tokenizer with <|endoftext|>
    assert ours[:n] == theirs[:n] and len(ours) == 77
