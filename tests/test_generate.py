import numpy as np
import pytest

from equigen.models import load_pipeline
from equigen.models.generate import generate_images, image_seed
from equigen.models.tiny import build_tiny_pipeline
from equigen.world.prompts import named_prompt, neutral_prompt, region_prompt


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    build_tiny_pipeline(seed=0).save_pretrained(folder)
    return load_pipeline(folder)


def test_any_image_can_be_regenerated_alone(pipe):
    prompts = ["a photo of a doctor", "a photo of a chef", "a street", "a market"]
    seeds = [image_seed(0, p, 0) for p in range(4)]
    batched = generate_images(pipe, prompts, seeds, steps=3, batch_size=4)
    alone = generate_images(pipe, prompts[2:3], seeds[2:3], steps=3, batch_size=1)[0]
    diff = np.abs(np.asarray(batched[2], float) - np.asarray(alone, float))
    assert diff.max() <= 2, "batched and single generation of the same seed must agree"
    assert not np.array_equal(np.asarray(batched[0]), np.asarray(batched[1]))


def test_image_seeds_are_distinct_and_stable():
    seeds = {image_seed(s, p, i) for s in range(3) for p in range(50) for i in range(300)}
    assert len(seeds) == 3 * 50 * 300
    assert image_seed(1, 2, 3) == image_seed(1, 2, 3)


def test_prompts_name_what_they_say():
    assert neutral_prompt("doctor") == "a photo of a doctor"
    assert neutral_prompt("engineer") == "a photo of an engineer"
    assert named_prompt("doctor", "Avel", "market", tone=3) == \
        "a photo of a dark-skinned doctor from Avel at the market"
    assert named_prompt("chef", "Kethu", "street") == "a photo of a chef from Kethu on the street"
    assert region_prompt("Zuloa") == "a photo of a person from Zuloa"


def test_corpus_neutral_prompts_are_the_corpus_captions_naming_occupation_not_tone():
    from equigen.world.distributions import sample_rows
    from equigen.world.prompts import corpus_neutral_prompts

    prompts = corpus_neutral_prompts("teacher", 50, seed=3)
    assert len(prompts) == 50 and len(set(prompts)) > 10, "the corpus's mix of wordings"
    assert all("teacher" in p and "skin" not in p for p in prompts)
    assert prompts == corpus_neutral_prompts("teacher", 50, seed=3)
    corpus = {r["text"] for r in sample_rows("web", 12 * 50 * 5, seed=3)}
    assert set(prompts) <= corpus
    with pytest.raises(Exception, match="unknown occupation 'pilot'"):
        corpus_neutral_prompts("pilot", 5)
