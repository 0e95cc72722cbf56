"""select_best stage: rank every model on validation, report test accuracy with its 95% interval, export the best."""

from transferlab.entrypoints import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import params, paths, selection

PATHS = paths.SelectBestPaths


def main() -> None:
    best = selection.select_best(params.load(), paths.parse(PATHS, __doc__))
    print(
        f"best: {best['name']} (val_acc {best['val_acc']:.4f}; test_acc {best['test_acc']:.4f}, "
        f"95% interval {best['test_acc_low']:.4f}-{best['test_acc_high']:.4f})"
    )


if __name__ == "__main__":
    run_cli(main)
