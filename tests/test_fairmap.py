"""Fair Mapping: losses against slow references, identity start, gradients, keywords, save/load,
and training through a tiny CLIP-based Stable Diffusion."""

import itertools
import json

import numpy as np
import pytest
import torch

from equigen.errors import EquigenError
from equigen.methods.fairmap import (
    FairMap,
    FairMapConfig,
    FairMapping,
    KeywordDetector,
    build_prompts,
    fair_distance_penalty,
    text_consistency,
    train_fairmap,
)
from equigen.methods.fairmap.losses import embedding_distance
from equigen.methods.fairmap.prompts import fix_articles
from equigen.methods.fairmap.train import EncodedPrompts, FairDistance, fairmap_losses
from equigen.models import load_pipeline
from equigen.models.generate import generate_images

TONE = {"groups": {"very light": "very light-skinned", "light": "light-skinned",
                   "brown": "brown-skinned", "dark": "dark-skinned"}, "keywords": ["skin"]}


def config(**overrides):
    values = {"model": "unused", "attributes": {"tone": TONE},
              "templates": ["a photo of a {group} {concept}", "a {group} {concept} at home"],
              "concepts": ["doctor", "engineer"], "heldout_concepts": ["farmer"]}
    values.update(overrides)
    return FairMapConfig.model_validate(values)


def test_fair_distance_penalty_matches_a_slow_reference():
    g = torch.Generator().manual_seed(0)
    distances = torch.rand(7, 4, generator=g) * 3 + 0.1
    expected = 0.0
    for row in distances.tolist():
        mean = sum(row) / len(row)
        expected += sum(((d - mean) / mean) ** 2 for d in row)
    assert fair_distance_penalty(distances).item() == pytest.approx(expected / 7, rel=1e-5)


def test_fair_distance_penalty_is_zero_only_when_equidistant():
    assert fair_distance_penalty(torch.full((3, 4), 2.5)).item() == 0.0
    assert fair_distance_penalty(torch.tensor([[1.0, 1.0, 1.0, 1.1]])).item() > 0.0
    with pytest.raises(ValueError, match="groups >= 2"):
        fair_distance_penalty(torch.ones(3, 1))


def test_text_consistency_by_hand():
    original = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])  # |v|^2 = 25 and 1
    mapped = original + torch.tensor([[[0.0, 1.0]], [[1.0, 1.0]]])  # |change|^2 = 1 and 2
    assert text_consistency(mapped, original).item() == pytest.approx((1 / 25 + 2 / 1) / 2)
    assert text_consistency(original, original).item() == 0.0


def test_embedding_distance_by_hand():
    mapped = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])  # token mean (1, 0)
    groups = torch.tensor([[[[1.0, 3.0], [1.0, 3.0]], [[1.0, 0.0], [-1.0, 0.0]]]])  # means (1,3), (0,0)
    assert embedding_distance(mapped, groups, "l2")[0].tolist() == pytest.approx([3.0, 1.0])
    cosine = embedding_distance(mapped, groups[:, :1], "cosine")
    assert cosine.item() == pytest.approx(1 - 1 / np.sqrt(10))


def test_identity_start_maps_every_embedding_to_itself():
    x = torch.randn(3, 5, 16)
    assert torch.equal(FairMap(16)(x), x)


@pytest.mark.parametrize("words,prompt,named", [
    (["dark-skinned", "skin"], "a photo of a dark-skinned doctor", True),
    (["dark-skinned", "skin"], "a doctor with dark skin", True),
    (["dark-skinned", "skin"], "A Photo Of A DARK-SKINNED Doctor", True),
    (["dark-skinned", "skin"], "a photo of a doctor", False),
    (["skin"], "a doctor in a sheepskin coat", False),  # whole words only
    (["light-skinned"], "a very light-skinned chef", True),
    (["light-skinned"], "a light source", False),
    (["woman", "man"], "a photo of a woman engineer", True),
    (["woman", "man"], "a photo of a mango", False),
])
def test_keyword_detection(words, prompt, named):
    assert KeywordDetector(words)(prompt) is named


def test_prompts_fill_groups_and_fix_articles():
    prompts = build_prompts(config())
    assert prompts.neutral == ["a photo of a doctor", "a photo of an engineer",
                               "a doctor at home", "an engineer at home"]
    assert prompts.variants["tone"][1] == [
        "a photo of a very light-skinned engineer", "a photo of a light-skinned engineer",
        "a photo of a brown-skinned engineer", "a photo of a dark-skinned engineer"]
    assert build_prompts(config(), ["farmer"]).neutral == ["a photo of a farmer", "a farmer at home"]
    assert fix_articles("an  photo of a  apple") == "a photo of an apple"


def test_intersections_make_joint_groups():
    gender = {"groups": {"man": "male", "woman": "female"}}
    cfg = config(attributes={"tone": TONE, "gender": gender}, intersections=[["gender", "tone"]])
    prompts = build_prompts(cfg)
    assert prompts.groups["genderxtone"][:2] == ["man & very light", "man & light"]
    assert prompts.variants["genderxtone"][0][7] == "a photo of a female dark-skinned doctor"
    assert len(prompts.variants["genderxtone"][0]) == 8


def test_reference_variants_are_the_first_templates_of_each_concept():
    prompts = build_prompts(config())
    assert prompts.concepts == ["doctor", "engineer", "doctor", "engineer"]
    references = prompts.reference_variants("tone")
    assert references[2] == references[0] == prompts.variants["tone"][0]
    assert references[3][3] == "a photo of a dark-skinned engineer"


def test_group_distance_is_zero_for_a_group_prompt_and_grows_with_the_change(tiny_pipe):
    cfg = config(distance="denoiser", noisy_latents="group", latent_pool=1)
    prompts = build_prompts(cfg)
    encoded = EncodedPrompts.of(tiny_pipe, prompts)
    distance = FairDistance(cfg, tiny_pipe, prompts)
    groups = encoded.variants["tone"][:1]  # (1, K, L, D)
    references = prompts.reference_variants("tone")[:1]
    same = distance(groups[:, 2], groups, torch.Generator().manual_seed(0), references)
    assert same[0, 2].item() == pytest.approx(0.0, abs=1e-8)  # mapped == group 2's prompt
    assert (same[0, [0, 1, 3]] > 0).all()
    nearer = distance(0.9 * groups[:, 2] + 0.1 * groups[:, 0], groups,
                      torch.Generator().manual_seed(0), references)
    assert nearer[0, 0] < same[0, 0] and nearer[0, 2] > 0  # same noise, t and latents: comparable


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="needs both"):
        config(templates=["a photo of a {concept}"])
    with pytest.raises(ValueError, match="both trained on and held out"):
        config(heldout_concepts=["doctor"])
    with pytest.raises(ValueError, match="intersection"):
        config(intersections=[["tone", "age"]])


@pytest.fixture(scope="module")
def tiny_pipe(tiny_model):
    return load_pipeline(str(tiny_model), device="cpu")


@pytest.mark.parametrize("overrides", [{"distance": "denoiser"}, {"distance": "embedding"},
                                       {"distance": "denoiser", "noisy_latents": "generated",
                                        "latent_pool": 1, "timesteps": (0.0, 1.0)},
                                       {"distance": "denoiser", "noisy_latents": "group",
                                        "latent_pool": 1, "timesteps": (0.0, 1.0)}])
def test_gradient_reaches_only_the_map(tiny_pipe, overrides):
    cfg = config(**overrides)
    prompts = build_prompts(cfg)
    encoded = EncodedPrompts.of(tiny_pipe, prompts)
    fairmap = FairMap(32)
    with torch.no_grad():  # move off the identity so that the text term has a gradient too
        fairmap.linear.weight.add_(0.01 * torch.randn(32, 32))
    distance = FairDistance(cfg, tiny_pipe, prompts)
    if cfg.noisy_latents == "generated":  # one latent per (concept, group) from the frozen model
        assert distance.pool.shape == (2 * 4, 4, 8, 8)
    losses = fairmap_losses(fairmap, distance, encoded, torch.arange(4), 1.0,
                            torch.Generator().manual_seed(0))
    if cfg.noisy_latents == "group":  # latents drawn once per reference prompt, on first need
        assert sorted(distance.pools_by_text) == sorted(t for row in prompts.variants["tone"][:2]
                                                        for t in row)
        assert all(pool.shape == (1, 4, 8, 8) for pool in distance.pools_by_text.values())
    losses["loss"].backward()
    assert fairmap.linear.weight.grad is not None and fairmap.linear.weight.grad.abs().sum() > 0
    frozen = itertools.chain(tiny_pipe.unet.parameters(), tiny_pipe.text_encoder.parameters(),
                             tiny_pipe.vae.parameters())
    assert all(p.grad is None for p in frozen)


def test_identity_map_leaves_images_unchanged(tiny_pipe):
    mapping = FairMapping(FairMap(32), {"tone": ["dark-skinned"]})
    prompts, seeds = ["a photo of a doctor", "a photo of a dark-skinned doctor"], [1, 2]
    plain = generate_images(tiny_pipe, prompts, seeds, steps=3, size=32)
    mapped = generate_images(tiny_pipe, prompts, seeds, steps=3, size=32,
                             prompt_encoder=mapping.encode)
    for a, b in zip(plain, mapped):
        assert np.abs(np.asarray(a, int) - np.asarray(b, int)).max() <= 1


def test_encode_maps_only_prompts_that_name_no_group(tiny_pipe):
    fairmap = FairMap(32)
    with torch.no_grad():
        fairmap.linear.bias.fill_(1.0)
    mapping = FairMapping(fairmap, {"tone": ["dark-skinned", "skin"]})
    prompts = ["a photo of a doctor", "a photo of a dark-skinned doctor", "a doctor with dark skin"]
    mapped, negative = mapping.encode(tiny_pipe, prompts)
    original, original_negative = tiny_pipe.encode_prompt(prompts, "cpu", 1, True)
    assert torch.allclose(mapped[0], original[0] + 1.0, atol=1e-5)
    assert torch.equal(mapped[1:], original[1:])
    assert torch.equal(negative, original_negative)  # the unconditional branch is never mapped


def test_save_load_round_trip(tmp_path):
    fairmap = FairMap(12)
    with torch.no_grad():
        fairmap.linear.weight.normal_()
    FairMapping(fairmap, {"tone": ["dark-skinned"]}, {"model": "m"}).save(tmp_path / "map")
    loaded = FairMapping.load(tmp_path / "map")
    assert torch.equal(loaded.map.linear.weight, fairmap.linear.weight)
    assert loaded.keywords == {"tone": ["dark-skinned"]} and loaded.info["model"] == "m"
    assert sorted(p.name for p in (tmp_path / "map").iterdir()) == ["fairmap.json",
                                                                    "fairmap.safetensors"]
    with pytest.raises(EquigenError, match="fairmap.safetensors: not found"):
        FairMapping.load(tmp_path)
    meta = json.loads((tmp_path / "map" / "fairmap.json").read_text())
    (tmp_path / "map" / "fairmap.json").write_text(json.dumps({**meta, "width": 7}))
    with pytest.raises(EquigenError, match="does not match width 7"):
        FairMapping.load(tmp_path / "map")


def test_width_mismatch_is_a_clear_error(tiny_pipe):
    with pytest.raises(EquigenError, match="width 16.*width 32"):
        FairMapping(FairMap(16), {"tone": ["dark"]}).encode(tiny_pipe, ["a doctor"])


@pytest.mark.parametrize("distance", ["denoiser", "embedding"])
def test_training_a_tiny_clip_pipeline_lowers_the_penalty(tiny_pipe, tmp_path, distance):
    cfg = config(model="tiny", distance=distance, steps=25, batch_size=4, lr=3e-3, fair_weight=10.0,
                 out=tmp_path / "map")
    mapping = train_fairmap(cfg, tiny_pipe)
    training = mapping.info["training"]
    assert training["fair_penalty_after"]["train"] < 0.5 * training["fair_penalty_before"]["train"]
    assert set(training["fair_penalty_after"]) == {"train", "heldout"}
    assert (tmp_path / "map" / "loss.csv").read_text().startswith("step,text,fair_tone,fair,loss")
    assert json.loads((tmp_path / "map" / "manifest.json").read_text())["status"] == "finished"
    reloaded = FairMapping.load(tmp_path / "map")
    assert torch.equal(reloaded.map.linear.weight, mapping.map.linear.weight)


def write_fairmap_config(tmp_path, model):
    path = tmp_path / "fairmap.yaml"
    path.write_text(
        f"model: {model}\n"
        "attributes:\n  tone:\n    groups: {light: light-skinned, dark: dark-skinned}\n"
        "    keywords: [skin]\n"
        "templates: ['a photo of a {group} {concept}']\n"
        "concepts: [doctor, chef]\nheldout_concepts: [farmer]\n"
        "steps: 3\nbatch_size: 2\n")
    return path


def test_train_and_audit_commands_end_to_end(tiny_model, tmp_path, capsys):
    from equigen.cli import main

    config_path = write_fairmap_config(tmp_path, tiny_model)
    with pytest.raises(SystemExit) as exit_:
        main(["--quiet", "fairmap", "train", "--config", str(config_path), "--lambda", "2.5",
              "--out", str(tmp_path / "map")])
    assert exit_.value.code == 0
    assert "fair penalty (heldout prompts)" in capsys.readouterr().out
    assert FairMapping.load(tmp_path / "map").info["config"]["fair_weight"] == 2.5

    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("name: p\nattributes:\n  tone: {groups: [very light, light, brown, dark]}\n"
                       "prompts:\n  - {text: a photo of a doctor}\n")
    audit = ["--quiet", "audit", "--model", str(tiny_model), "--prompts", str(prompts), "--n", "2",
             "--out", str(tmp_path / "audit"), "--set", "steps=1", "--set", "n_boot=20"]
    with pytest.raises(SystemExit) as exit_:
        main(audit + ["--fairmap", str(tmp_path / "map")])
    assert exit_.value.code == 0
    results = json.loads((tmp_path / "audit" / "results.json").read_text())
    assert results["config"]["fairmap"] == str(tmp_path / "map")
    with pytest.raises(SystemExit) as exit_:  # same folder, no map: refused, not mixed
        main(audit)
    assert exit_.value.code == 1
    assert "fairmap was" in capsys.readouterr().err


def test_sweep_trains_audits_and_reports(tiny_model, tmp_path, monkeypatch):
    from equigen.methods.fairmap import sweep as sweep_module
    from equigen.methods.fairmap.sweep import SweepPlan, run_sweep

    cfg = config(model=str(tiny_model), steps=2, batch_size=2, out=tmp_path / "unused")
    fairness = tmp_path / "fairness.yaml"
    fairness.write_text("name: f\nattributes:\n  tone: {groups: [very light, light, brown, dark]}\n"
                        "prompts:\n  - {text: a photo of a farmer}\n")
    fidelity = tmp_path / "fidelity.yaml"
    fidelity.write_text("name: g\nattributes:\n  region: {groups: [Avel, Borenza, Kethu, Miravan, "
                        "Zuloa]}\nprompts:\n  - {text: a farmer from Avel, expect: {region: Avel}}\n")
    plan = SweepPlan(weights=[0.5, 4.0], n=2, fairness_prompts=fairness, fidelity_prompts=fidelity,
                     steps=2, out=tmp_path / "sweep")
    table = run_sweep(cfg, plan)
    assert [r["lambda"] for r in table] == [None, 0.5, 4.0]
    assert all(len(r["fd"]) == 3 and 0.0 <= r["fidelity"][0] <= 1.0 for r in table)
    page = (tmp_path / "sweep" / "report.html").read_text()
    assert 'id="tradeoff"' in page and "λ=4" in page
    assert json.loads((tmp_path / "sweep" / "lambda-4" / "map" / "fairmap.json").read_text())[
        "config"]["fair_weight"] == 4.0

    calls = []
    monkeypatch.setattr(sweep_module, "train_fairmap", lambda *a, **k: calls.append(a))
    monkeypatch.setattr("equigen.models.load_pipeline", lambda *a, **k: calls.append(a))
    run_sweep(cfg, plan)  # everything is on disk: nothing is trained or generated again
    assert calls == []


@pytest.mark.parametrize("name", ["mini-world", "sd15-fairface"])
def test_shipped_configs_are_valid(name):
    from pathlib import Path

    from equigen.config import load_config

    cfg = load_config(FairMapConfig, Path(__file__).parents[1] / "configs" / "fairmap" / f"{name}.yaml")
    prompts = build_prompts(cfg)
    assert cfg.heldout_concepts and not set(cfg.heldout_concepts) & set(cfg.concepts)
    # every variant names its group, so the keyword detector would leave it unmapped
    mapping = FairMapping(FairMap(4), cfg.keyword_lists())
    assert all(not mapping.applies_to(v) for rows in prompts.variants.values() for row in rows for v in row)
    assert all(mapping.applies_to(p) for p in prompts.neutral)
