"""SCoFT training on a tiny random Stable Diffusion: gradients reach only the LoRA, every loss
term is finite, a stopped run resumes to the same weights, the LoRA loads into a fresh pipeline,
and two processes train together under accelerate."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from equigen.data.captioned import write_records
from equigen.errors import EquigenError
from equigen.methods.scoft import ScoftConfig, train_scoft
from equigen.methods.scoft import train as scoft_train
from equigen.methods.scoft.train import build_scoft, step_generator


@pytest.fixture
def curated(tmp_path):
    """4 curated rows over 2 cultures, each with a generic caption and 2 negatives."""
    root = tmp_path / "curated"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i, (caption, culture) in enumerate([("a street in Kethu", "Kethu"), ("a Kethu market", "Kethu"),
                                            ("a person from Zuloa", "Zuloa"), ("a Zuloa home", "Zuloa")]):
        names = [f"images/{i}.png", f"images/{i}_n0.png", f"images/{i}_n1.png"]
        for name in names:
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / name)
        rows.append({"file_name": names[0], "text": caption, "culture": culture,
                     "generic_text": "a photo", "negatives": names[1:]})
    write_records(root, rows)
    return root


def config(curated, tiny_model, tmp_path, **kw):
    values = dict(data=curated, model=str(tiny_model), out=tmp_path / "run", rank=4, steps=4,
                  batch_size=2, contrastive_every=2, contrastive_steps=3, checkpoint_every=2,
                  device="cpu")
    values.update(kw)
    return ScoftConfig(**values)


def test_every_term_is_finite_and_only_lora_gets_gradients(curated, tiny_model, tmp_path):
    cfg = config(curated, tiny_model, tmp_path, contrastive_every=1)
    pipe, params, compute = build_scoft(cfg, torch.device("cpu"))
    loss, parts = compute(0, [0, 2], step_generator(cfg, 0, 0), torch.device("cpu"))
    assert set(parts) == {"ldm", "memorization", "contrastive", "perceptual"}
    assert all(np.isfinite(v) for v in parts.values()) and torch.isfinite(loss)
    loss.backward()
    lora_ids = {id(p) for p in params}
    named = dict(pipe.unet.named_parameters())
    lora_b = [p for n, p in named.items() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)
    frozen = [n for n, p in named.items() if id(p) not in lora_ids]
    assert frozen and all(named[n].grad is None for n in frozen)
    for module in (pipe.vae, pipe.text_encoder, compute.extractor):
        assert all(p.grad is None for p in module.parameters())


def test_memorization_term_is_zero_when_generic_caption_is_the_caption(curated, tiny_model, tmp_path):
    cfg = config(curated, tiny_model, tmp_path)
    _, _, compute = build_scoft(cfg, torch.device("cpu"))
    for record in compute.data.records:
        record.generic_text = record.text
    _, parts = compute(0, [0, 1], step_generator(cfg, 0, 0), torch.device("cpu"))
    assert parts["memorization"] == 0.0 and parts["ldm"] > 0


def test_resume_gives_the_weights_of_an_uninterrupted_run(curated, tiny_model, tmp_path, monkeypatch):
    whole = train_scoft(config(curated, tiny_model, tmp_path, out=tmp_path / "whole"))
    assert whole["steps"] == 4

    calls = {"n": 0}
    real_append = scoft_train._append_log

    def stop_after_first_checkpoint(out, rows):
        real_append(out, rows)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(scoft_train, "_append_log", stop_after_first_checkpoint)
    cfg = config(curated, tiny_model, tmp_path, out=tmp_path / "stopped")
    with pytest.raises(KeyboardInterrupt):
        train_scoft(cfg)
    assert not (cfg.out / "pytorch_lora_weights.safetensors").exists()
    resumed = train_scoft(cfg)
    assert resumed["resumed_from"] == 2
    a = load_file(tmp_path / "whole" / "pytorch_lora_weights.safetensors")
    b = load_file(cfg.out / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    log = (cfg.out / "loss.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3", "4"]  # no step twice


def test_lora_loads_into_a_fresh_pipeline_and_changes_it(curated, tiny_model, tmp_path):
    from equigen.models import load_pipeline
    from equigen.models.generate import generate_images
    from equigen.models.loading import apply_lora

    cfg = config(curated, tiny_model, tmp_path, lr=5e-2, steps=2, weights={"contrastive": 0, "perceptual": 0})
    train_scoft(cfg)
    base = load_pipeline(str(tiny_model))
    before = np.asarray(generate_images(base, ["a street in Kethu"], [1], steps=2)[0], dtype=float)
    tuned = load_pipeline(str(tiny_model))
    tuned.load_lora_weights(str(cfg.out))  # the plain diffusers call works on the folder
    tuned = load_pipeline(str(tiny_model))
    apply_lora(tuned, cfg.out)
    after = np.asarray(generate_images(tuned, ["a street in Kethu"], [1], steps=2)[0], dtype=float)
    assert np.abs(after - before).mean() > 0.1


def test_a_scoped_lora_draws_prompts_outside_its_cultures_as_the_base_model(curated, tiny_model,
                                                                           tmp_path):
    from equigen.models import load_pipeline
    from equigen.models.generate import generate_images
    from equigen.models.loading import LORA_SCOPE, apply_lora

    cfg = config(curated, tiny_model, tmp_path, lr=5e-2, steps=2,
                 weights={"contrastive": 0, "perceptual": 0})
    train_scoft(cfg)
    assert json.loads((cfg.out / LORA_SCOPE).read_text()) == {"scope": ["Kethu", "Zuloa"]}
    prompts, seeds = ["a street in Avel", "a Kethu market", "a photo of a doctor"], [1, 2, 3]

    def draw(pipe, scope=None):
        images = generate_images(pipe, prompts, seeds, steps=2, batch_size=3, lora_scope=scope)
        return [np.asarray(image, dtype=float) for image in images]

    base = draw(load_pipeline(str(tiny_model)))
    scoped_pipe = load_pipeline(str(tiny_model))
    scope = apply_lora(scoped_pipe, cfg.out)
    assert scope is not None and [scope.applies_to(p) for p in prompts] == [False, True, False]
    scoped = draw(scoped_pipe, scope)
    everywhere_pipe = load_pipeline(str(tiny_model))
    assert apply_lora(everywhere_pipe, cfg.out, everywhere=True) is None
    everywhere = draw(everywhere_pipe)

    for i in (0, 2):  # outside the scope: the base model's image (batched in other company)
        assert np.abs(scoped[i] - base[i]).max() <= 1 < np.abs(everywhere[i] - base[i]).max()
    assert np.abs(scoped[1] - everywhere[1]).max() <= 1 < np.abs(scoped[1] - base[1]).max()
    assert all(m.merged is False for m in scoped_pipe.unet.modules() if hasattr(m, "merged"))


def test_lora_scope_file_errors_name_the_file(tmp_path):
    from equigen.models.loading import LORA_SCOPE, read_lora_scope, write_lora_scope

    write_lora_scope(tmp_path, [])
    assert read_lora_scope(tmp_path) is None  # an empty scope: every prompt
    (tmp_path / LORA_SCOPE).write_text('{"scope": "Kethu"}')
    with pytest.raises(EquigenError, match=LORA_SCOPE):
        read_lora_scope(tmp_path)
    (tmp_path / LORA_SCOPE).write_text("{not json")
    with pytest.raises(EquigenError, match=LORA_SCOPE):
        read_lora_scope(tmp_path / "pytorch_lora_weights.safetensors")


def test_rows_without_negatives_are_a_clear_error(curated, tiny_model, tmp_path):
    lines = (curated / "metadata.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    rows[1]["negatives"] = []
    write_records(curated, rows)
    with pytest.raises(EquigenError, match="scoft negatives"):
        build_scoft(config(curated, tiny_model, tmp_path), torch.device("cpu"))
    with pytest.raises(EquigenError, match="culture"):
        build_scoft(config(curated, tiny_model, tmp_path, cultures=["Avel"]), torch.device("cpu"))


def test_two_processes_train_together_under_torchrun(curated, tiny_model, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # torchrun sets the variables accelerate reads (accelerate launch on GPUs sets the same)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", "29517", "-m", "equigen", "scoft", "train", "--data", str(curated), "--model", str(tiny_model),
           "--out", str(out), "--steps", "2", "--set", "rank=4", "--set", "batch_size=2",
           "--set", "contrastive_every=2", "--set", "contrastive_steps=2", "--set", "device=cpu"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["results"]["processes"] == 2
    assert (out / "pytorch_lora_weights.safetensors").is_file()


def test_prior_preservation_term_uses_the_base_models_drawings(curated, tiny_model, tmp_path):
    from equigen.methods.scoft.prior import PRIOR_LATENTS

    captions = tmp_path / "prior.txt"
    captions.write_text("a street in Avel\na photo of a doctor\n")
    prior = {"captions": captions, "images_per_caption": 2, "steps": 2, "batch_size": 3}
    weights = {"prior": 0.5}
    cfg = config(curated, tiny_model, tmp_path, prior=prior, weights=weights)
    pipe, params, compute = build_scoft(cfg, torch.device("cpu"))
    assert len(compute.prior) == 4 and compute.prior.caption_of == [0, 0, 1, 1]
    # the drawings are the base model's, unguided: the same as a pipeline without any LoRA draws
    from equigen.models import load_pipeline
    from equigen.models.generate import image_seed

    base = load_pipeline(str(tiny_model), device="cpu", dtype="fp32")
    again = base("a photo of a doctor", num_inference_steps=2, guidance_scale=1.0,
                 generator=torch.Generator().manual_seed(image_seed(cfg.seed, 1, 1)),
                 output_type="latent").images[0]
    torch.testing.assert_close(compute.prior.latents[3], again, atol=1e-4, rtol=0)

    loss, parts = compute(0, [0, 2], step_generator(cfg, 0, 0), torch.device("cpu"))
    assert set(parts) == {"ldm", "memorization", "prior"} and parts["prior"] > 0
    assert torch.isclose(loss, torch.tensor(0.7 * parts["ldm"] + 0.3 * parts["memorization"]
                                            + 0.5 * parts["prior"]), atol=1e-5)
    loss.backward()
    lora = {id(p) for p in params}
    assert all(p.grad is None for p in pipe.unet.parameters() if id(p) not in lora)
    # the other terms see the same draws with the prior term on or off
    plain = config(curated, tiny_model, tmp_path, out=tmp_path / "plain")
    _, _, plain_compute = build_scoft(plain, torch.device("cpu"))
    _, plain_parts = plain_compute(0, [0, 2], step_generator(plain, 0, 0), torch.device("cpu"))
    assert abs(plain_parts["ldm"] - parts["ldm"]) < 1e-6
    # a second build reuses the saved drawings; other captions draw anew
    saved = (cfg.out / PRIOR_LATENTS).stat().st_mtime_ns
    build_scoft(cfg, torch.device("cpu"))
    assert (cfg.out / PRIOR_LATENTS).stat().st_mtime_ns == saved
    captions.write_text("a market in Borenza\n")
    _, _, changed = build_scoft(cfg, torch.device("cpu"))
    assert len(changed.prior) == 2


def test_prior_weight_needs_captions(curated, tiny_model, tmp_path):
    with pytest.raises(ValueError, match="prior.captions"):
        config(curated, tiny_model, tmp_path, weights={"prior": 0.5})


def test_prior_target_base_is_the_frozen_models_prediction(curated, tiny_model, tmp_path):
    """target: base regresses onto the UNet with its LoRA off, so at a LoRA that changes nothing
    the term is zero, it grows once the LoRA moves, and only LoRA parameters get gradient."""
    captions = tmp_path / "prior.txt"
    captions.write_text("a street in Avel\n")
    prior = {"captions": captions, "images_per_caption": 2, "steps": 2, "target": "base"}
    cfg = config(curated, tiny_model, tmp_path, prior=prior, weights={"prior": 1.0})
    pipe, params, compute = build_scoft(cfg, torch.device("cpu"))
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.zero_()  # LoRA output B @ A = 0: the adapted model is the base model
    _, parts = compute(0, [0, 2], step_generator(cfg, 0, 0), torch.device("cpu"))
    assert parts["prior"] < 1e-10
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    loss, parts = compute(0, [0, 2], step_generator(cfg, 0, 0), torch.device("cpu"))
    assert parts["prior"] > 1e-6
    loss.backward()
    lora = {id(p) for p in params}
    assert all(p.grad is None for p in pipe.unet.parameters() if id(p) not in lora)
    assert all(p.requires_grad for p in params)  # switched back on after the base call


def test_prior_unconditional_share_swaps_in_the_empty_caption():
    """``prior.unconditional``: that share of the sampled rows carries the empty caption's
    embedding, the same images are drawn either way, and 0 leaves every caption in place."""
    from equigen.methods.scoft.prior import PriorSet

    latents, embeds = torch.randn(6, 4, 8, 8), torch.randn(3, 5, 16) + 10  # captions far from empty
    empty = torch.zeros(1, 5, 16)
    caption_of = [0, 0, 1, 1, 2, 2]
    kept = PriorSet(latents, caption_of, embeds, empty, 0.0)
    lat0, emb0 = kept.sample(400, torch.Generator().manual_seed(3))
    assert (emb0.abs().flatten(1).amax(1) > 0).all()
    half = PriorSet(latents, caption_of, embeds, empty, 0.5)
    lat, emb = half.sample(400, torch.Generator().manual_seed(3))
    torch.testing.assert_close(lat, lat0)  # the same drawings; only their captions change
    is_empty = emb.flatten(1).abs().amax(1) == 0
    assert 150 < int(is_empty.sum()) < 250
    torch.testing.assert_close(emb[~is_empty], emb0[~is_empty])
    all_empty = PriorSet(latents, caption_of, embeds, empty, 1.0).sample(8, torch.Generator())[1]
    assert all_empty.abs().max() == 0
    with pytest.raises(ValueError, match="empty caption"):
        PriorSet(latents, caption_of, embeds, None, 0.5)
