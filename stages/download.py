"""download stage: read data.source (CIFAR-10 or an ImageFolder) into the canonical dataset form."""

from transferlab.entrypoints import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import data, params, paths

PATHS = paths.DownloadPaths


def main() -> None:
    out = paths.parse(PATHS, __doc__)
    p = params.load().data
    dataset = data.prepare(p.source, p.image_size, out.dataset_dir, out.raw_dir)
    print(
        f"{len(dataset.classes)} classes, {len(dataset.train.labels)} train and "
        f"{len(dataset.test.labels)} test images -> {out.dataset_dir}"
    )


if __name__ == "__main__":
    run_cli(main)
