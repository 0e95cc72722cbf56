"""The subset stage's logic: seeded, class-balanced, nested index subsets."""

import itertools

import numpy as np
import pytest

from transferlab.errors import UserError
from transferlab.subsets import NestedSampler, class_quotas, make_subsets, max_balanced_size

N_CLASSES = 3
CLASSES = ["a", "b", "c"]


def shuffled_labels(per_class: list[int], seed: int = 0) -> np.ndarray:
    """Labels with `per_class[c]` images of class c, in a shuffled (not class-sorted) order."""
    labels = np.concatenate([np.full(n, c, dtype=np.int64) for c, n in enumerate(per_class)])
    return np.random.default_rng(seed).permutation(labels)


TRAIN = shuffled_labels([20, 20, 20], seed=1)
TEST = shuffled_labels([7, 7, 7], seed=2)


def subsets(seed=0, tinyvgg=12, transfer=(6, 12), val=6, test=9, train_labels=TRAIN, test_labels=TEST) -> dict:
    return make_subsets(train_labels, test_labels, CLASSES, seed, tinyvgg, transfer, val, test)


def class_counts(indices, labels, n_classes=N_CLASSES) -> list[int]:
    return np.bincount(labels[np.asarray(indices, dtype=np.int64)], minlength=n_classes).tolist()


# --- class_quotas ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "n_classes"), [(0, 3), (1, 3), (9, 3), (10, 3), (11, 3), (7, 10), (1000, 10), (1003, 10), (5, 1)]
)
def test_class_quotas_sum_and_are_even(size, n_classes):
    quotas = class_quotas(size, n_classes)
    assert len(quotas) == n_classes
    assert sum(quotas) == size
    assert max(quotas) - min(quotas) <= 1
    assert quotas == sorted(quotas, reverse=True)  # the remainder goes to the earlier classes


def test_class_quotas_examples():
    assert class_quotas(10, 3) == [4, 3, 3]
    assert class_quotas(11, 3) == [4, 4, 3]
    assert class_quotas(2, 4) == [1, 1, 0, 0]
    assert class_quotas(500, 10) == [50] * 10


# --- max_balanced_size ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([20, 20, 20], 60),
        ([5, 2, 10], 7),  # 7 -> [3, 2, 2] fits; 8 -> [3, 3, 2] needs 3 of class 1
        ([2, 5, 10], 6),  # 7 -> [3, 2, 2] needs 3 of class 0: the remainder goes to early classes
        ([10, 10, 3], 11),  # 11 -> [4, 4, 3]; 12 -> [4, 4, 4]
        ([0, 5, 5], 0),  # an empty class allows no balanced subset
        ([1, 1, 1], 3),
    ],
)
def test_max_balanced_size_with_unequal_class_counts(counts, expected):
    labels = shuffled_labels(counts)
    assert max_balanced_size(labels, len(counts)) == expected


def test_max_balanced_size_counts_classes_missing_from_the_labels():
    labels = shuffled_labels([4, 4])  # a third class exists but has no images
    assert max_balanced_size(labels, 2) == 8
    assert max_balanced_size(labels, 3) == 2  # 2 -> [1, 1, 0]; 3 -> [1, 1, 1] needs the empty class
    assert max_balanced_size(shuffled_labels([0, 4, 4]), 3) == 0  # 1 -> [1, 0, 0] already needs it


@pytest.mark.parametrize("counts", list(itertools.product([0, 1, 3, 4, 7], repeat=3)))
def test_max_balanced_size_matches_brute_force(counts):
    def fits(size):
        return all(q <= c for q, c in zip(class_quotas(size, 3), counts, strict=True))

    expected = max(size for size in range(sum(counts) + 1) if fits(size))
    assert max_balanced_size(shuffled_labels(list(counts)), 3) == expected


# --- subsets --------------------------------------------------------------------------------------


def test_subsets_are_class_balanced():
    result = subsets(tinyvgg=13, transfer=(6, 10), test=8)
    assert class_counts(result["tinyvgg_train"], TRAIN) == [5, 4, 4]
    assert class_counts(result["transfer_train"]["6"], TRAIN) == [2, 2, 2]
    assert class_counts(result["transfer_train"]["10"], TRAIN) == [4, 3, 3]
    assert class_counts(result["test"], TEST) == [3, 3, 2]


def test_subsets_are_sorted_unique_python_ints():
    result = subsets()
    lists = [result["tinyvgg_train"], result["test"], *result["transfer_train"].values()]
    for indices in lists:
        assert indices == sorted(set(indices))
        assert all(type(i) is int for i in indices)
    assert sorted(result["transfer_train"]) == ["12", "6"]


def test_subsets_are_seeded():
    assert subsets(seed=7) == subsets(seed=7)
    assert subsets(seed=7) != subsets(seed=8)
    different = subsets(seed=8)
    same = subsets(seed=7)
    assert different["test"] != same["test"]
    assert different["transfer_train"]["6"] != same["transfer_train"]["6"]


def test_subsets_do_not_depend_on_the_order_sizes_are_given():
    assert subsets(transfer=(12, 6, 3)) == subsets(transfer=(3, 6, 12))


def test_subsets_are_nested():
    result = subsets(tinyvgg=15, transfer=(3, 6, 9, 12, 15))
    transfer = result["transfer_train"]
    for smaller, larger in itertools.pairwise([3, 6, 9, 12, 15]):
        assert set(transfer[str(smaller)]) < set(transfer[str(larger)])
    # The same sampler draws every train subset, so equal sizes give identical subsets.
    assert result["tinyvgg_train"] == transfer["15"]


def test_nested_with_a_remainder_keeps_the_smaller_subset():
    sampler = NestedSampler(TRAIN, CLASSES, seed=3, split="train")
    small, large = sampler.draw(5, "k"), sampler.draw(13, "k")
    assert set(small) < set(large)
    assert class_counts(small, TRAIN) == [2, 2, 1]
    assert class_counts(large, TRAIN) == [5, 4, 4]


def test_test_subset_is_drawn_from_the_test_split():
    # Train and test have different classes per index; the test subset must follow test labels.
    result = subsets(test=21)
    assert sorted(result["test"]) == list(range(len(TEST)))  # all 21 test images, none beyond
    result = subsets(test=6)
    assert max(result["test"]) < len(TEST)
    assert class_counts(result["test"], TEST) == [2, 2, 2]


def test_test_subset_is_independent_of_train_sizes():
    assert subsets(tinyvgg=3, transfer=(3,))["test"] == subsets(tinyvgg=51, transfer=(30, 51))["test"]


def test_whole_split_is_allowed():
    result = subsets(tinyvgg=54, transfer=(54,), val=6, test=21)
    assert sorted(result["tinyvgg_train"] + result["val"]) == list(range(60))  # train and validation: all of it
    assert result["test"] == list(range(21))


@pytest.mark.parametrize(
    ("kwargs", "key", "maximum"),
    [
        ({"tinyvgg": 61}, "subset.tinyvgg_train_size", 60),
        ({"transfer": (6, 100)}, "train_size", 60),
        ({"test": 22}, "subset.test_size", 21),
    ],
)
def test_sizes_larger_than_available_raise_user_error(kwargs, key, maximum):
    with pytest.raises(UserError) as excinfo:
        subsets(**kwargs)
    message = str(excinfo.value)
    assert message.startswith(f"{key} is ")
    assert f"at most {maximum} images" in message


def test_maximum_accounts_for_unequal_classes():
    train = shuffled_labels([10, 4, 10])  # 24 images, but a balanced subset can hold only 13
    assert len(subsets(tinyvgg=10, transfer=(10,), val=3, train_labels=train)["tinyvgg_train"]) == 10
    with pytest.raises(UserError, match=r"subset.tinyvgg_train_size is 14 .*train split.*at most 13") as err:
        subsets(tinyvgg=14, transfer=(13,), val=3, train_labels=train)
    # the class too small to fill it, by name
    assert "class 'b' has 4 train images and 14 takes 5; lower subset.tinyvgg_train_size or add images to 'b'" in str(
        err.value
    )


def test_the_error_names_the_split():
    with pytest.raises(UserError, match="the test split allows at most 21"):
        subsets(test=1000)


# --- the validation subset ------------------------------------------------------------------------


def test_validation_is_class_balanced_from_the_train_split_and_disjoint_from_every_train_subset():
    chosen = subsets(tinyvgg=12, transfer=(3, 6, 15), val=9)
    val = chosen["val"]
    assert class_counts(val, TRAIN) == [3, 3, 3]
    assert val == sorted(set(val))
    train = set(chosen["tinyvgg_train"]).union(*map(set, chosen["transfer_train"].values()))
    assert not train & set(val)


def test_validation_is_the_same_whatever_the_train_sizes():
    assert subsets(tinyvgg=3, transfer=(3,))["val"] == subsets(tinyvgg=12, transfer=(6, 12, 15))["val"]


def test_validation_that_cannot_fit_beside_the_train_subsets_is_one_line():
    with pytest.raises(UserError) as err:
        subsets(tinyvgg=51, transfer=(6,), val=30)  # 17 + 10 of 20 images per class
    message = str(err.value)
    assert "subset.val_size is 30 but does not fit beside the largest train subset (51 images)" in message
    assert "class 'a' of the train split has 20 images and they need 27" in message and "\n" not in message
    assert subsets(tinyvgg=30, transfer=(6,), val=30)["val"]  # 10 + 10: fits exactly
