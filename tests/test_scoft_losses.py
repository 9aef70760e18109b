"""SCoFT's loss terms against slow hand-written references, the rollout's gradient path, and
the near-copy check."""

import math

import numpy as np
import pytest
import torch

from equigen.methods.scoft import losses
from equigen.methods.scoft.memorization import memorization_check, near_copy_threshold
from equigen.methods.scoft.rollout import denoise_to_latent, split_prediction
from equigen.methods.scoft.train import sample_timesteps


def slow_contrastive(g, p, n):
    total = 0.0
    for b in range(g.shape[0]):
        def d(u, v):
            return 1 - float(u @ v) / (math.sqrt(float(u @ u)) * math.sqrt(float(v @ v)))
        pull = d(g[b], p[b])
        push = sum(d(g[b], n[b, k]) for k in range(n.shape[1])) / n.shape[1]
        total += pull - push
    return total / g.shape[0]


def test_self_contrastive_loss_matches_slow_reference():
    gen = torch.Generator().manual_seed(0)
    g, p, n = (torch.randn(5, 7, generator=gen, dtype=torch.float64),
               torch.randn(5, 7, generator=gen, dtype=torch.float64),
               torch.randn(5, 3, 7, generator=gen, dtype=torch.float64))
    assert losses.self_contrastive_loss(g, p, n).item() == pytest.approx(slow_contrastive(g, p, n), abs=1e-6)


def test_self_contrastive_loss_is_lowest_at_the_positive():
    p = torch.tensor([[1.0, 0.0]])
    n = torch.tensor([[[-1.0, 0.0]]])
    at_positive = losses.self_contrastive_loss(p.clone(), p, n)
    at_negative = losses.self_contrastive_loss(-p.clone(), p, n)
    assert at_positive.item() == pytest.approx(-2.0)  # d(p,p) - d(p,-p) = 0 - 2
    assert at_negative.item() == pytest.approx(2.0)


def test_self_contrastive_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="negatives"):
        losses.self_contrastive_loss(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4))


def test_perceptual_loss_matches_hand_computation():
    gen = torch.Generator().manual_seed(1)
    a = [torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 5, 2, 2, generator=gen)]
    b = [torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 5, 2, 2, generator=gen)]
    expected = []
    for x, y in zip(a, b):
        per_position = []
        for i in range(x.shape[0]):
            for h in range(x.shape[2]):
                for w in range(x.shape[3]):
                    u, v = x[i, :, h, w], y[i, :, h, w]
                    per_position.append(float(((u / u.norm() - v / v.norm()) ** 2).sum()))
        expected.append(sum(per_position) / len(per_position))
    assert losses.perceptual_loss(a, b).item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert losses.perceptual_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)


def test_memorization_loss_is_zero_for_equal_predictions_and_stops_gradient():
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    generic = torch.randn(2, 4, 8, 8, requires_grad=True)
    assert losses.memorization_loss(x, x.detach()).item() == 0.0
    losses.memorization_loss(x, generic).backward()
    assert x.grad is not None and generic.grad is None


def test_timesteps_are_never_zero():
    t = sample_timesteps(100_000, 1000, torch.Generator().manual_seed(0))
    assert t.min().item() == 1 and t.max().item() == 999


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_split_prediction_recovers_the_clean_latent(kind):
    gen = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(3, 4, 2, 2, generator=gen), torch.randn(3, 4, 2, 2, generator=gen)
    alpha = torch.tensor([0.9, 0.5, 0.1])
    a, s = alpha.sqrt().view(-1, 1, 1, 1), (1 - alpha).sqrt().view(-1, 1, 1, 1)
    x_t = a * x0 + s * eps
    prediction = eps if kind == "epsilon" else a * eps - s * x0
    got_eps, got_x0 = split_prediction(prediction, x_t, alpha, kind)
    assert torch.allclose(got_eps, eps, atol=1e-5) and torch.allclose(got_x0, x0, atol=1e-5)


class Affine(torch.nn.Module):
    """A stand-in UNet: prediction = w * x + cond mean; records which calls build a graph."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3))
        self.graph_calls = []

    def forward(self, x, t, encoder_hidden_states):
        self.graph_calls.append(torch.is_grad_enabled())
        out = self.w * x + encoder_hidden_states.mean(dim=(1, 2)).view(-1, 1, 1, 1)

        class Output:
            sample = out
        return Output()


@pytest.mark.parametrize("grad_call", [0, 3])
def test_rollout_builds_a_graph_in_exactly_one_call(grad_call):
    net = Affine()
    x_t = torch.randn(2, 4, 3, 3)
    cond, uncond = torch.randn(2, 5, 6), torch.zeros(2, 5, 6)
    alphas = torch.linspace(0.999, 0.01, 1000)
    out = denoise_to_latent(net, x_t, torch.tensor([500, 20]), cond, uncond, alphas, "epsilon",
                            steps=4, guidance=2.0, grad_call=grad_call)
    assert net.graph_calls == [i == grad_call for i in range(4)]
    out.sum().backward()
    assert net.w.grad is not None and net.w.grad.abs().item() > 0


def test_near_copy_threshold_and_rate_by_hand():
    assert near_copy_threshold(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), quantile=0.5) == pytest.approx(0.3)
    curated = np.array([[1.0, 0.0], [0.0, 1.0]])
    generated = np.array([[1.0, 0.01], [1.0, 1.0], [0.0, 2.0]])  # sims 0.99995, 0.707, 1.0
    result = memorization_check(generated, curated, threshold=0.9)
    assert result.flagged.tolist() == [True, False, True]
    assert result.rate == pytest.approx(2 / 3)


def test_near_copies_of_copies_and_of_fresh_renders_on_the_mini_world(tmp_path):
    from equigen.data.captioned import load_records
    from equigen.methods.scoft.memorization import near_copies, pixel_features
    from equigen.world.export import export_distribution
    from equigen.world.render import render_rows

    folder = export_distribution("curated", tmp_path / "curated", n=12, seed=0)
    records = load_records(folder)
    curated = render_rows([r.model_dump() for r in records])
    features = pixel_features
    copies = near_copies(curated, curated, records, features)
    assert copies["rate"] == 1.0 and copies["threshold_source"].startswith("re-rendered")
    p, low, high = copies["interval"]
    assert p == 1.0 and 0.7 < low < 1.0 == high
    fresh = render_rows([{**r.model_dump(), "seed": int(r.seed) + 1} for r in records])
    assert near_copies(fresh, curated, records, features)["rate"] <= 0.25  # ~5% by design
    assert near_copies(fresh, curated, records, features, threshold=-1.0)["rate"] == 1.0
    for record in records:
        record.seed = None
    with pytest.raises(ValueError, match="give one"):
        near_copies(fresh, curated, records, features)


def test_perceptual_registry_builds_frozen_differentiable_extractors(tmp_path):
    import timm
    from safetensors.torch import save_file

    from equigen.errors import EquigenError
    from equigen.methods.scoft.perceptual import PerceptualSpec, available, build_perceptual

    assert {"oracle", "stablerep", "vgg16", "timm", "open_clip", "dreamsim"} <= set(available())
    oracle = build_perceptual("oracle")
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    slices = oracle.slices(x)
    assert len(slices) == 4 and oracle.embed(x).shape[0] == 2
    oracle.embed(x).sum().backward()
    assert x.grad is not None and all(not p.requires_grad for p in oracle.parameters())

    # any timm model from a local weights file (here a tiny ViT the test saves itself)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "vit.safetensors")
    vit = build_perceptual(PerceptualSpec(name="timm", model="vit_tiny_patch16_224",
                                          weights=tmp_path / "vit.safetensors"))
    assert torch.equal(vit.model.pos_embed, model.pos_embed)
    assert vit.embed(torch.rand(1, 3, 64, 64)).shape == (1, 192)  # resized to 224 inside
    with pytest.raises(EquigenError, match="not weights of vit_small_patch16_224"):
        build_perceptual(PerceptualSpec(name="timm", model="vit_small_patch16_224",
                                        weights=tmp_path / "vit.safetensors"))
    with pytest.raises(EquigenError, match="unknown; available"):
        build_perceptual("dinosaur")
    with pytest.raises(EquigenError, match="needs weights"):
        build_perceptual("vgg16")
    with pytest.raises(EquigenError, match="not found"):
        build_perceptual(PerceptualSpec(name="vgg16", weights=tmp_path / "nowhere.pth"))


def test_caption_bootstrap_resamples_captions_with_their_draws():
    from equigen.methods.scoft.memorization import caption_bootstrap

    assert caption_bootstrap(np.ones((5, 3))) == (1.0, 1.0, 1.0)
    # 8 of 32 captions copied on every draw vs the same 25% spread evenly over the captions
    clustered = np.zeros((32, 8))
    clustered[:8] = 1
    spread = np.zeros((32, 8))
    spread[:, :2] = 1
    rate, low, high = caption_bootstrap(clustered)
    assert rate == 0.25 and low < 0.15 and high > 0.35  # ~ a 25% share of 32 captions
    assert caption_bootstrap(spread) == (0.25, 0.25, 0.25)  # every caption the same: no spread
    with pytest.raises(ValueError, match="captions, draws"):
        caption_bootstrap(np.ones(4))
