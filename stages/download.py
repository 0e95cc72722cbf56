"""download stage: read data.source (CIFAR-10 or an ImageFolder) into the canonical dataset form."""
import argparse

from transferlab.errors import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import data, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", help="where the canonical dataset is written")
    parser.add_argument("--raw-dir", default="data/raw", help="where the CIFAR-10 archive is downloaded")
    args = parser.parse_args()
    p = params.load().data
    dataset = data.prepare(p.source, p.image_size, args.out_dir, args.raw_dir)
    print(f"{len(dataset.classes)} classes, {len(dataset.train.labels)} train and "
          f"{len(dataset.test.labels)} test images -> {args.out_dir}")


if __name__ == "__main__":
    run_cli(main)
