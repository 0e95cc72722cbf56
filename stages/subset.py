"""subset stage: seeded, class-balanced, nested train subsets, one shared validation subset (from
the train split, disjoint from them) and one shared test subset."""

from transferlab.entrypoints import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import data, params, paths, subsets

PATHS = paths.SubsetPaths


def main() -> None:
    io = paths.parse(PATHS, __doc__)
    p = params.load()
    dataset = data.load(io.dataset_dir)
    chosen = subsets.make_subsets(
        dataset.train.labels,
        dataset.test.labels,
        dataset.classes,
        p.seed,
        p.subset.tinyvgg_train_size,
        p.train_size,
        p.subset.val_size,
        p.subset.test_size,
    )
    subsets.save(chosen, io.subsets_dir)


if __name__ == "__main__":
    run_cli(main)
