"""The shipped oracle annotators: interface, round trip, and that they read renders correctly."""

import torch

from equigen.audit.annotators import Annotator
from equigen.world.distributions import sample_rows
from equigen.world.oracle import OracleAnnotator, OracleNet, attribute_groups, labels_of
from equigen.world.render import render
from equigen.world.scene import Scene


def renders(n, seed):
    rows = sample_rows("balanced", n, seed=seed)
    images = [render(Scene(r["tone"], r["region"], r["occupation"], r["setting"], r["style"]),
                     r["seed"]) for r in rows]
    return rows, images


def test_shipped_oracle_reads_fresh_renders():
    oracle = OracleAnnotator.load()
    assert isinstance(oracle, Annotator)
    assert oracle.groups == attribute_groups()
    rows, images = renders(300, seed=4242)
    probs = oracle.predict_proba(images)
    truth = labels_of(rows, oracle.groups)
    for attr, p in probs.items():
        assert p.shape == (300, len(oracle.groups[attr]))
        assert torch.allclose(p.sum(-1), torch.ones(300), atol=1e-5)
        accuracy = (p.argmax(-1) == truth[attr]).float().mean().item()
        assert accuracy >= 0.95, (attr, accuracy)  # the bench measures the >= 98% bar on 2000


def test_save_load_round_trip(tmp_path):
    groups = attribute_groups()
    torch.manual_seed(0)
    oracle = OracleAnnotator(OracleNet(groups, width=8), groups)
    oracle.save(tmp_path)
    again = OracleAnnotator.load(tmp_path)
    _, images = renders(4, seed=1)
    a, b = oracle.predict_proba(images), again.predict_proba(images)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.features(images).shape == (4, 32)
