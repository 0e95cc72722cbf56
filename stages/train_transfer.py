"""train_transfer stage: the experiment grid of pretrained backbones with new heads."""

from transferlab.entrypoints import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import params, paths, tracking, transfer

PATHS = paths.TransferPaths


def main() -> None:
    tracking.print_metrics(transfer.train_transfer(params.load(), paths.parse(PATHS, __doc__)))


if __name__ == "__main__":
    run_cli(main)
