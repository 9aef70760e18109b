import numpy as np
import pytest

from equigen.audit.metrics import (
    bootstrap_interval,
    chance_all_within_tv,
    distribution,
    expected_tv_noise,
    guidance_tilt,
    total_variation,
)


def test_distribution_counts_every_group():
    assert distribution(np.array([0, 0, 2, 3]), 4).tolist() == [0.5, 0.0, 0.25, 0.25]


def test_total_variation_hand_computed():
    # |0.7-0.25| + |0.2-0.25| + |0.1-0.25| + |0-0.25| = 0.45 + 0.05 + 0.15 + 0.25 = 0.9 -> 0.45
    assert total_variation([0.7, 0.2, 0.1, 0.0], [0.25] * 4) == pytest.approx(0.45)
    assert total_variation([1, 0], [0, 1]) == pytest.approx(1.0)
    assert total_variation([0.3, 0.7], [0.3, 0.7]) == 0.0


def test_bootstrap_interval_brackets_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = (rng.random(100) < 0.3).astype(float)
    large = (rng.random(10000) < 0.3).astype(float)
    est, lo, hi = bootstrap_interval(small, np.mean)
    assert lo <= est <= hi
    _, lo2, hi2 = bootstrap_interval(large, np.mean)
    assert (hi2 - lo2) < (hi - lo) / 5
    assert lo2 < 0.3 < hi2


def test_expected_tv_noise_matches_simulation():
    p = np.array([0.7, 0.2, 0.06, 0.04])
    rng = np.random.default_rng(1)
    n = 200
    simulated = np.mean([total_variation(rng.multinomial(n, p) / n, p) for _ in range(4000)])
    assert expected_tv_noise(p, n) == pytest.approx(simulated, rel=0.1)


# --- hand-computed cases (each number worked out on paper) -----------------------------------
from equigen.audit.metrics import (  # noqa: E402
    fairness_discrepancy,
    joint_labels,
    joint_target,
    kl_to_target,
    mean_absolute_deviation,
    mean_over_prompts,
    metric_interval,
    normalized_entropy,
    paired_mean_change,
    uniform,
)

P = np.array([0.5, 0.25, 0.25, 0.0])


def test_fd_hand_computed():
    # p - u = (0.25, 0, 0, -0.25): sqrt(0.0625 + 0.0625) = sqrt(0.125)
    assert fairness_discrepancy(P, uniform(4)) == pytest.approx(np.sqrt(0.125))
    assert fairness_discrepancy(uniform(4), uniform(4)) == 0.0


def test_kl_hand_computed():
    # 0.5 ln(0.5/0.25) + 2 * 0.25 ln(0.25/0.25) + 0 = 0.5 ln 2
    assert kl_to_target(P, uniform(4)) == pytest.approx(0.5 * np.log(2))
    assert kl_to_target([1.0, 0.0], [0.0, 1.0]) == float("inf")
    assert kl_to_target([0.0, 1.0], [0.5, 0.5]) == pytest.approx(np.log(2))


def test_mad_hand_computed():
    # |0.5-0.25| + 0 + 0 + |0-0.25| = 0.5, / 4 = 0.125
    assert mean_absolute_deviation(P) == pytest.approx(0.125)


def test_entropy_hand_computed():
    # H = -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) = 1.5 ln 2; / ln 4 = 0.75
    assert normalized_entropy(P) == pytest.approx(0.75)
    assert normalized_entropy(uniform(5)) == pytest.approx(1.0)
    assert normalized_entropy([0, 1, 0]) == 0.0


def test_intersectional_joint():
    a, b = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    joint = joint_labels(a, b, 2)
    assert joint.tolist() == [0, 1, 3, 3]
    assert distribution(joint, 4).tolist() == [0.25, 0.25, 0.0, 0.5]
    assert joint_target([0.5, 0.5], [0.2, 0.8]).tolist() == pytest.approx([0.1, 0.4, 0.1, 0.4])


def test_metric_interval_and_prompt_mean():
    rng = np.random.default_rng(0)
    labels = rng.choice(2, size=2000, p=[0.8, 0.2])
    est, lo, hi = metric_interval(labels, 2, fairness_discrepancy)
    assert lo <= est <= hi and lo < np.sqrt(2) * 0.3 < hi
    balanced = rng.choice(2, size=400)
    mean, lo, hi = mean_over_prompts([labels, balanced], 2, fairness_discrepancy)
    parts = [fairness_discrepancy(distribution(l, 2), uniform(2)) for l in (labels, balanced)]
    assert mean == pytest.approx(np.mean(parts)) and lo <= mean <= hi


def test_paired_mean_change_hand_computed_and_paired():
    # prompt A: image changes (0 -> 1) once in four: +0.25; prompt B unchanged: mean +0.125
    after = [np.array([1, 1, 0, 0]), np.array([1, 1])]
    before = [np.array([0, 1, 0, 0]), np.array([1, 1])]
    est, lo, hi = paired_mean_change(after, before)
    # (a resample of A can hold the changed image 0 to 4 times: prompt mean 0 to 1, overall 0 to 0.5)
    assert est == pytest.approx(0.125) and 0 <= lo < est < hi <= 0.5
    # every image changes: the change is exactly 1, whatever is resampled
    assert paired_mean_change([np.ones(5)], [np.zeros(5)]) == pytest.approx((1.0, 1.0, 1.0))
    # two models that mostly agree image by image: the paired interval of the change is much
    # narrower than the interval of either share on its own
    rng = np.random.default_rng(1)
    base = [rng.integers(0, 2, 40) for _ in range(6)]
    moved = [np.where(rng.random(40) < 0.05, 1 - b, b) for b in base]
    _, lo, hi = paired_mean_change(moved, base)
    _, lo_alone, hi_alone = mean_over_prompts(moved, 2, lambda p, _: float(p[1]))
    assert hi - lo < 0.5 * (hi_alone - lo_alone)


def test_paired_mean_change_rejects_unpaired_runs():
    with pytest.raises(ValueError, match="prompt 1"):
        paired_mean_change([np.ones(3), np.ones(3)], [np.ones(3), np.ones(4)])
    with pytest.raises(ValueError):
        paired_mean_change([np.ones(3)], [np.ones(3), np.ones(3)])


def test_real_data_fair_diffusion_counts():
    """FairFace man/woman counts (shared/data): mean |share(woman) - 0.5| as the data README
    states: 0.311 (SD 1.5), 0.105 (Fair Diffusion), 0.258 (LAION). MAD of a 2-group
    distribution is exactly |p_woman - 0.5|, so the mean MAD over occupations must agree."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "occupation_gender_counts.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    data = json.loads(path.read_text())
    expected = {"sd15": 0.311, "fair": 0.105, "laion": 0.258}
    for source, want in expected.items():
        mads = [mean_absolute_deviation(np.array(c) / sum(c)) for c in data[source].values()
                if sum(c)]
        assert np.mean(mads) == pytest.approx(want, abs=5e-4), source


def test_sampling_floor_is_the_fd_of_a_fair_sampler():
    from equigen.audit.metrics import sampling_floor

    u = uniform(4)
    # E||p_hat - u||^2 = sum_k u_k (1 - u_k) / n = 0.75 / n; FD is about its square root
    for n in (50, 400):
        floor = sampling_floor(fairness_discrepancy, u, n)
        assert floor == pytest.approx(np.sqrt(0.75 / n), rel=0.15)


def test_bootstrap_covers_true_value_at_about_nominal_rate():
    """Simulated data with a known distribution: the 95% interval of the share of group 0 must
    cover the truth in about 95% of repetitions (fixed seed, 300 repetitions)."""
    rng = np.random.default_rng(7)
    truth = 0.3
    covered = 0
    for rep in range(300):
        sample = (rng.random(200) < truth).astype(float)
        _, lo, hi = bootstrap_interval(sample, np.mean, n_boot=300, seed=rep)
        covered += lo <= truth <= hi
    assert 0.90 <= covered / 300 <= 0.99


def test_interval_of_a_biased_metric_contains_its_estimate():
    """FD of a perfectly balanced sample is 0, and every bootstrap draw is above it: a plain
    percentile interval would exclude 0; the bias-corrected one starts at it."""
    labels = np.repeat([0, 1, 2, 3], 15)
    est, lo, hi = metric_interval(labels, 4, fairness_discrepancy)
    assert est == 0.0 and lo == 0.0 and lo <= est <= hi


def test_wilson_interval_hand_computed():
    from equigen.audit.metrics import wilson_interval

    p, low, high = wilson_interval(5, 10)  # textbook: [0.2366, 0.7634]
    assert p == 0.5 and low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    p, low, high = wilson_interval(0, 120)  # at k = 0 the upper end is z^2 / (n + z^2)
    assert (p, low) == (0.0, 0.0) and high == pytest.approx(3.8415 / 123.8415, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_guidance_tilt_hand_computed():
    # p = (0.6, 0.4), marginal (0.5, 0.5), w = 2: p^2 m^-1 = (0.72, 0.32) -> (0.6923, 0.3077)
    assert guidance_tilt([0.6, 0.4], [0.5, 0.5], 2.0) == pytest.approx([0.72 / 1.04, 0.32 / 1.04])
    # w = 1 is the conditional itself; a group the prompt never shows stays at zero
    assert guidance_tilt([0.7, 0.3, 0.0], [0.2, 0.3, 0.5], 1.0) == pytest.approx([0.7, 0.3, 0.0])
    assert guidance_tilt([0.7, 0.3, 0.0], [0.2, 0.3, 0.5], 4.0)[2] == 0.0
    # when the prompt matches the marginal, guidance changes nothing
    assert guidance_tilt([0.2, 0.3, 0.5], [0.2, 0.3, 0.5], 7.5) == pytest.approx([0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="marginal must be positive"):
        guidance_tilt([0.5, 0.5], [1.0, 0.0], 2.0)


def test_chance_all_within_tv_hand_computed():
    # 2 draws from (0.5, 0.5): shares (1/2, 1/2) with chance 1/2, else TV 0.5 to the target
    half = [[0.5, 0.5]]
    assert chance_all_within_tv(half, half, n=2, bar=0.0) == pytest.approx(0.5, abs=0.02)
    assert chance_all_within_tv([[0.5, 0.5]], [[0.5, 0.5]], n=2, bar=0.5) == 1.0
    # two independent groups must both pass: 1/2 x 1/2
    assert chance_all_within_tv([[0.5, 0.5]] * 2, [[0.5, 0.5]] * 2, n=2, bar=0.0) == pytest.approx(
        0.25, abs=0.02)
    # a model drawing (0.9, 0.1) against a target (0.5, 0.5): 4 draws pass TV <= 0.25 only with
    # 1, 2 or 3 of the first kind: 1 - 0.9^4 - 0.1^4 = 0.3438
    assert chance_all_within_tv([[0.9, 0.1]], [[0.5, 0.5]], n=4, bar=0.25) == pytest.approx(
        1 - 0.9 ** 4 - 0.1 ** 4, abs=0.02)
    with pytest.raises(ValueError, match="2 distributions but 1 targets"):
        chance_all_within_tv([[0.5, 0.5]] * 2, [[0.5, 0.5]], n=2, bar=0.1)
