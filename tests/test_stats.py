"""stats: accuracy intervals, McNemar's exact test, mean and spread over seeds, against known values."""

import math
import statistics

import numpy as np
import pytest

from transferlab.stats import accuracy_interval, discordant_pairs, mcnemar_p, mean_std

Z = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def test_wilson_interval_of_no_correct_image():
    # Wilson at 0/n: [0, z² / (n + z²)]; the normal approximation would give [0, 0]
    low, high = accuracy_interval(0, 10)
    assert low == 0.0
    assert high == pytest.approx(Z**2 / (10 + Z**2), abs=1e-9)
    assert high == pytest.approx(0.2775, abs=1e-4)


def test_wilson_interval_of_all_correct_mirrors_none_correct():
    low, high = accuracy_interval(10, 10)
    assert high == 1.0
    assert low == pytest.approx(1 - accuracy_interval(0, 10)[1], abs=1e-9)


def test_wilson_interval_textbook_case():
    # Newcombe (1998), Statistics in Medicine 17:857, example 81/263: Wilson 0.2553 to 0.3662
    low, high = accuracy_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_wilson_interval_matches_its_formula():
    k, n = 1_700, 2_000
    p = k / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    assert accuracy_interval(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)


def test_wilson_interval_narrows_with_more_images():
    small, large = accuracy_interval(8, 10), accuracy_interval(800, 1_000)
    assert small[0] < large[0] < 0.8 < large[1] < small[1]


def test_wilson_interval_of_no_image_is_refused():
    with pytest.raises(ValueError, match="at least one image"):
        accuracy_interval(0, 0)


def test_discordant_pairs_count_only_disagreements():
    first = [True, True, False, False, True]
    second = [True, False, True, False, False]
    assert discordant_pairs(first, second) == (2, 1)


def test_mcnemar_known_values():
    # b = 0, c = 5: two-sided exact binomial p = 2 * 0.5**5
    assert mcnemar_p([False] * 5, [True] * 5) == pytest.approx(0.0625)
    # b = 1, c = 9: 2 * P(X <= 1 | n = 10, 1/2) = 2 * 11 / 1024
    first = [True] + [False] * 9
    assert mcnemar_p(first, [not x for x in first]) == pytest.approx(22 / 1024)


def test_mcnemar_is_symmetric_and_ignores_concordant_images():
    rng = np.random.default_rng(0)
    first, second = rng.random(200) < 0.8, rng.random(200) < 0.7
    p = mcnemar_p(first, second)
    assert 0 < p < 1
    assert mcnemar_p(second, first) == p
    # images both get right, or both get wrong, change nothing
    both = np.array([True, True, False])
    assert mcnemar_p(np.r_[first, both], np.r_[second, both]) == p


def test_mcnemar_balanced_disagreement_is_no_evidence():
    assert mcnemar_p([True, False] * 3, [False, True] * 3) == 1.0


def test_mcnemar_without_discordant_images_is_one():
    same = [True, False, True, True]
    assert mcnemar_p(same, same) == 1.0
    assert mcnemar_p([], []) == 1.0


def test_mcnemar_refuses_different_images():
    with pytest.raises(ValueError, match="different images"):
        mcnemar_p([True, False], [True])


def test_mean_and_sample_std_over_seeds():
    mean, std = mean_std([0.80, 0.82, 0.84])
    assert mean == pytest.approx(0.82)
    assert std == pytest.approx(0.02)  # the population deviation would be 0.0163
    assert mean_std([0.5, 0.5]) == (0.5, 0.0)


def test_mean_std_of_one_seed_is_refused():
    with pytest.raises(statistics.StatisticsError):
        mean_std([0.8])
