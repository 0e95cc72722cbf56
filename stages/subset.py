"""subset stage: seeded, class-balanced, nested train subsets and one shared test subset."""
import argparse

from transferlab import data, params, subsets
from transferlab.errors import run_cli
from transferlab.outputs import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir")
    parser.add_argument("out_file", help="JSON file of index lists")
    args = parser.parse_args()
    p = params.load()
    dataset = data.load(args.data_dir)
    chosen = subsets.make_subsets(
        dataset.train.labels, dataset.test.labels, len(dataset.classes), p.seed,
        p.subset.tinyvgg_train_size, p.train_size, p.subset.test_size,
    )
    write_json(args.out_file, chosen)


if __name__ == "__main__":
    run_cli(main)
