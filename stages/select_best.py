"""select_best stage: rank every model, export the best, draw its predictions."""

from transferlab.entrypoints import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import params, paths, selection

PATHS = paths.SelectBestPaths


def main() -> None:
    best = selection.select_best(params.load(), paths.parse(PATHS, __doc__))
    print(f"best: {best['name']} (test_acc {best['test_acc']:.4f}, test_loss {best['test_loss']:.4f})")


if __name__ == "__main__":
    run_cli(main)
