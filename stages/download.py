"""download stage: read data.source (CIFAR-10 or your own images) into the canonical dataset form."""

from transferlab.entrypoints import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import params, paths, sources

PATHS = paths.DownloadPaths


def main() -> None:
    out = paths.parse(PATHS, __doc__)
    summary = sources.prepare(params.load().data, out.dataset_dir, out.raw_dir)
    skipped = f" ({summary.skipped} unreadable skipped)" if summary.skipped else ""
    print(
        f"{len(summary.classes)} classes, {summary.counts['train']} train and {summary.counts['test']} test "
        f"images{skipped} -> {out.dataset_dir}"
    )


if __name__ == "__main__":
    run_cli(main)
