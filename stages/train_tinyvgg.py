"""train_tinyvgg stage: the from-scratch baseline on the TinyVGG subset at native resolution."""

from transferlab.entrypoints import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import params, paths, tinyvgg, tracking

PATHS = paths.TinyVGGPaths


def main() -> None:
    metrics = tinyvgg.train_tinyvgg(params.load(), paths.parse(PATHS, __doc__))
    tracking.print_metrics({"tinyvgg": metrics})


if __name__ == "__main__":
    run_cli(main)
