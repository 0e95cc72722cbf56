"""subset stage: seeded, class-balanced, nested train subsets and one shared test subset."""
import argparse

from transferlab.errors import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import data, params, subsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir")
    parser.add_argument("out_dir", help="one JSON file of indices per subset")
    args = parser.parse_args()
    p = params.load()
    dataset = data.load(args.data_dir)
    chosen = subsets.make_subsets(
        dataset.train.labels, dataset.test.labels, len(dataset.classes), p.seed,
        p.subset.tinyvgg_train_size, p.train_size, p.subset.test_size,
    )
    subsets.save(chosen, args.out_dir)


if __name__ == "__main__":
    run_cli(main)
