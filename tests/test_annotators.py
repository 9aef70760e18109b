"""Annotators behind one interface: zero-shot CLIP, a user's classifier, and the calibration check.

Every model here is tiny and random, built by the test (nothing is downloaded).
"""

import json
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from equigen.audit.annotate import annotate, load_annotator
from equigen.audit.annotators import Annotator, images_to_tensor
from equigen.audit.calibration import calibrate
from equigen.audit.prompts import AttributeSpec
from equigen.errors import EquigenError

PROMPTS = {
    "gender": {"man": ["a photo of a man", "a man", "a portrait of a male person"],
               "woman": ["a photo of a woman"]},
    "age": {"young": ["a young person", "a child"], "middle-aged": ["a middle-aged person"],
            "old": ["an old person", "an elderly person", "a senior"]},
}


def random_images(n, seed=0, size=(40, 48)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
            for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random 2-layer CLIP saved like a hub checkpoint (model + image processor + tokenizer)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from equigen.models.tiny import CLIP_VOCAB_SIZE, clip_tokenizer_from_open_clip

    folder = tmp_path_factory.mktemp("tiny-clip")
    layers = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    config = CLIPConfig(
        text_config=dict(vocab_size=CLIP_VOCAB_SIZE, max_position_embeddings=77, **layers),
        vision_config=dict(image_size=32, patch_size=8, **layers), projection_dim=16)
    torch.manual_seed(0)
    model = CLIPModel(config)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                           crop_size={"height": 32, "width": 32}),
        tokenizer=clip_tokenizer_from_open_clip())
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_config(path, model, **extra):
    path.write_text(yaml.safe_dump({"model": str(model), "attributes": PROMPTS, **extra},
                                  sort_keys=False))
    return path


@pytest.fixture(scope="module")
def clip_annotator(tiny_clip, tmp_path_factory):
    config = write_config(tmp_path_factory.mktemp("cfg") / "clip.yaml", tiny_clip, batch_size=2)
    return load_annotator(f"clip:{config}")


def test_clip_annotator_shapes_and_ensemble_match_hand_computation(clip_annotator):
    annotator = clip_annotator
    assert isinstance(annotator, Annotator)
    assert annotator.groups == {"gender": ["man", "woman"], "age": ["young", "middle-aged", "old"]}
    images = random_images(5)
    probs = annotator.predict_proba(images)  # batch_size 2: three batches
    assert probs["gender"].shape == (5, 2) and probs["age"].shape == (5, 3)
    for p in probs.values():
        assert torch.allclose(p.sum(-1), torch.ones(5), atol=1e-5)

    # By hand, with the model's own feature functions.
    model, processor = annotator.model, annotator.processor

    def features(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    norm = torch.nn.functional.normalize
    with torch.no_grad():
        pixels = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        v = norm(features(model.get_image_features(pixel_values=pixels)), dim=-1)
        for attribute, groups in PROMPTS.items():
            rows = []
            for prompts in groups.values():
                tokens = processor.tokenizer(prompts, padding=True, return_tensors="pt")
                t = norm(features(model.get_text_features(**tokens)), dim=-1)
                rows.append(norm(t.mean(0), dim=-1))
            logits = model.logit_scale.exp() * v @ torch.stack(rows).T
            assert torch.allclose(probs[attribute], logits.softmax(-1), atol=1e-5), attribute

    # Tensors in [0, 1] are accepted too.
    from_tensor = annotator.predict_proba(images_to_tensor(images))
    assert from_tensor["age"].shape == (5, 3)


def test_clip_abstention_threshold_is_used_by_default(tiny_clip, tmp_path):
    images = random_images(4, seed=1)
    specs = {a: AttributeSpec(groups=list(g)) for a, g in PROMPTS.items()}
    strict = load_annotator(f"clip:{write_config(tmp_path / 'a.yaml', tiny_clip, abstain_below=0.99)}")
    assert strict.abstain_below == 0.99
    read = annotate(strict, images, specs)  # no threshold given: the annotator's own
    assert all((labels == -1).all() for labels, _ in read.values())
    read = annotate(strict, images, specs, abstain_below=0.0)  # explicitly off
    assert all((labels >= 0).all() for labels, _ in read.values())

    per_attribute = write_config(tmp_path / "b.yaml", tiny_clip, abstain_below={"age": 0.99})
    read = annotate(load_annotator(f"clip:{per_attribute}"), images, specs)
    assert (read["age"][0] == -1).all() and (read["gender"][0] >= 0).all()


def test_missing_clip_model_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    config = write_config(tmp_path / "clip.yaml", "nobody-here/no-such-clip")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "transformers", None)  # fails before importing transformers
        start = time.perf_counter()
        with pytest.raises(EquigenError) as err:
            load_annotator(f"clip:{config}")
        assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert "nobody-here/no-such-clip" in message and "not in the Hugging Face cache" in message
    assert "offline" in message and "hf download" in message

    (tmp_path / "empty").mkdir()
    with pytest.raises(EquigenError, match="has no config.json"):
        load_annotator(f"clip:{write_config(tmp_path / 'c.yaml', tmp_path / 'empty')}")
    with pytest.raises(EquigenError, match="config file not found"):
        load_annotator(f"clip:{tmp_path / 'absent.yaml'}")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"model": "x/y", "attributes": PROMPTS,
                                                       "abstain_bellow": 0.5}))
    with pytest.raises(EquigenError, match="unknown key 'abstain_bellow'"):
        load_annotator(f"clip:{tmp_path / 'bad.yaml'}")
    with pytest.raises(EquigenError, match="clip:CONFIG.yaml, classifier:FOLDER"):
        load_annotator("fairface")


def test_shipped_fairface_config_is_valid():
    from equigen.audit.clip_annotator import CLIPAnnotatorConfig
    from equigen.config import load_config

    cfg = load_config(CLIPAnnotatorConfig, "configs/annotators/clip-fairface.yaml")
    assert cfg.model == "openai/clip-vit-large-patch14"
    assert list(cfg.attributes["gender"]) == ["man", "woman"]
    assert list(cfg.attributes["race"]) == ["Black", "Asian", "White", "Indian"]
    assert list(cfg.attributes["age"]) == ["young", "middle-aged", "old"]
    assert all(len(p) >= 3 for groups in cfg.attributes.values() for p in groups.values())


def test_classifier_round_trip(tmp_path):
    import timm

    from equigen.audit.classifier_annotator import ClassifierAnnotator, save_classifier

    attributes = {"gender": ["man", "woman"], "age": ["young", "middle-aged", "old"]}
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5)
    save_classifier(model, tmp_path / "clf", attributes, image_size=32, abstain_below=0.4)
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["arch"] == "test_resnet" and config["attributes"] == attributes

    before = ClassifierAnnotator(model, ClassifierAnnotator.load(tmp_path / "clf").config)
    after = load_annotator(f"classifier:{tmp_path / 'clf'}")
    assert isinstance(after, Annotator) and after.groups == attributes
    assert after.abstain_below == 0.4
    images = random_images(3, seed=2)
    a, b = before.predict_proba(images), after.predict_proba(images)
    for attribute in attributes:
        assert b[attribute].shape == (3, len(attributes[attribute]))
        assert torch.equal(a[attribute], b[attribute])
        assert torch.allclose(b[attribute].sum(-1), torch.ones(3), atol=1e-5)
    # The head's slices: gender = logits 0-1, age = logits 2-4.
    logits = after.logits(images)
    assert torch.allclose(b["age"], logits[:, 2:5].softmax(-1))

    with pytest.raises(EquigenError, match="outputs but the attributes"):
        save_classifier(model, tmp_path / "wrong", {"gender": ["man", "woman"]}, image_size=32)
    with pytest.raises(EquigenError, match="missing"):
        load_annotator(f"classifier:{tmp_path / 'nothing'}")


# ------------------------------------------------------------------------------- calibration

class DarkAsBrown:
    """The oracle, except that it reads every dark-skinned person as brown: a biased annotator."""

    def __init__(self, oracle):
        self.oracle = oracle
        self.groups = oracle.groups

    def predict_proba(self, images):
        probs = self.oracle.predict_proba(images)
        tone = probs["tone"].clone()
        dark, brown = self.groups["tone"].index("dark"), self.groups["tone"].index("brown")
        tone[:, brown] += tone[:, dark]
        tone[:, dark] = 0
        return {**probs, "tone": tone}


@pytest.fixture(scope="module")
def probe_set(tmp_path_factory):
    from equigen.world.export import export_distribution

    return export_distribution("probe", tmp_path_factory.mktemp("probe"), n=60, seed=11)


def test_calibration_of_the_oracle_and_of_a_biased_annotator(probe_set):
    oracle = load_annotator("oracle")
    report = calibrate(oracle, probe_set, attributes=["tone", "region"], n_boot=200)
    tone = report["attributes"]["tone"]
    assert report["n_images"] == 60 and tone["n"] == 60  # the int tone index was mapped
    assert tone["accuracy"][0] >= 0.9
    assert tone["accuracy"][1] <= tone["accuracy"][0] <= tone["accuracy"][2]
    assert tone["abstention_rate"] == 0 and tone["unmatched"] == {}
    counts = np.array(tone["confusion"]["counts"])
    assert counts.shape == (4, 5) and counts.sum() == 60
    assert tone["n_by_group"] == dict(zip(tone["groups"], counts.sum(1).tolist()))

    biased = calibrate(DarkAsBrown(oracle), probe_set, attributes=["tone"], n_boot=200)
    tone_b = biased["attributes"]["tone"]
    assert tone_b["recall"]["dark"] == 0.0
    assert tone_b["recall_gap"][0] >= 0.9 and tone_b["recall_gap"][1] >= 0.5
    assert tone_b["recall_gap_groups"][0] == "dark"
    assert tone_b["accuracy"][0] < tone["accuracy"][0]
    assert tone["recall_gap"][0] < tone_b["recall_gap"][0]

    # Abstention: with an impossible bar every image abstains, and is reported as such.
    strict = calibrate(oracle, probe_set, attributes=["tone"], abstain_below=1.01, n_boot=10)
    assert strict["attributes"]["tone"]["abstention_rate"] == 1.0
    assert strict["attributes"]["tone"]["accuracy"] == [None, None, None]


def test_calibration_errors_name_the_problem(probe_set, tmp_path):
    oracle = load_annotator("oracle")
    with pytest.raises(EquigenError, match="not read by the annotator"):
        calibrate(oracle, probe_set, attributes=["gender"])
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "x",
                                                         "tone": "purple"}) + "\n")
    with pytest.raises(EquigenError, match="no 'tone' label matches"):
        calibrate(oracle, tmp_path)


def test_calibrate_command(probe_set, tmp_path):
    import typer

    from equigen.cli import annotators

    app = typer.Typer()
    app.add_typer(annotators.app, name="annotators")
    runner = CliRunner()
    result = runner.invoke(app, ["annotators", "calibrate", "--help"])
    assert result.exit_code == 0 and "$ equigen annotators calibrate" in result.output
    out = tmp_path / "cal.json"
    result = runner.invoke(app, ["annotators", "calibrate", "--annotator", "oracle", str(probe_set),
                                 "--attribute", "tone", "--n-boot", "50", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "tone" in result.output and "recall gap" in result.output
    assert json.loads(out.read_text())["attributes"]["tone"]["n"] == 60
