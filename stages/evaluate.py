"""evaluate stage: every trained model on the shared test subset, with confusion matrices."""

from transferlab.entrypoints import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import evaluation, paths, tracking

PATHS = paths.EvaluatePaths


def main() -> None:
    tracking.print_metrics(evaluation.evaluate(paths.parse(PATHS, __doc__)))


if __name__ == "__main__":
    run_cli(main)
