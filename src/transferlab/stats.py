"""How sure a comparison of models is: the few statistics select_best reports.

A test accuracy measured on n images is an estimate; its 95% interval says how far the true
accuracy may be from it (`accuracy_interval`). Two models scored on the same images are compared
image by image, not by their accuracies alone (`mcnemar_p`). A model trained with several seeds
is reported as mean and spread over them (`mean_std`).

scipy computes the intervals and tests; it is imported here only, when first needed.
"""

import statistics
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95


def accuracy_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of an accuracy of `correct` out of `total` images.

    Why Wilson: unlike the normal approximation (accuracy ± 1.96 standard errors) it stays inside
    [0, 1] and keeps its coverage near 0% and 100% accuracy and on small subsets, which a
    benchmark's best models and a smoke run's few images both reach. ValueError when `total` is 0."""
    from scipy.stats import binomtest

    if total <= 0:
        raise ValueError(f"an accuracy interval needs at least one image, got {total}")
    interval = binomtest(int(correct), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def discordant_pairs(first_correct: Sequence[bool], second_correct: Sequence[bool]) -> tuple[int, int]:
    """(b, c): how many images only the first model gets right, and how many only the second.
    The images both get right or both get wrong say nothing about which is better."""
    first, second = np.asarray(first_correct, dtype=bool), np.asarray(second_correct, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"the models were scored on different images: {first.shape} vs {second.shape}")
    return int((first & ~second).sum()), int((~first & second).sum())


def mcnemar_p(first_correct: Sequence[bool], second_correct: Sequence[bool]) -> float:
    """McNemar's exact test: the two-sided p-value that two models, scored on the same images
    (`*_correct`: per image, whether each model's prediction is right), are equally accurate.

    Why: on shared images the models' errors are paired, so comparing two accuracies as if they
    were independent samples understates how sure a difference is (or overstates it). Under "equally
    accurate", each discordant image (`discordant_pairs`) is as likely to favour either model: the
    exact binomial test of b successes in b + c trials with probability 1/2. No discordant image:
    nothing tells the models apart, p = 1."""
    from scipy.stats import binomtest

    b, c = discordant_pairs(first_correct, second_correct)
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5).pvalue)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator) of a metric over seeds.

    Why the sample deviation: the seeds are a sample of the seeds one could have drawn, and the
    spread is what another seed may give. Needs two values or more (StatisticsError, a ValueError,
    otherwise): one seed has no spread to report."""
    return statistics.fmean(values), statistics.stdev(values)
