"""train_tinyvgg stage: the from-scratch baseline on the TinyVGG subset at native resolution."""
import argparse
from pathlib import Path

from transferlab.errors import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import experiments, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("data_dir", "subsets_dir", "model_file", "metrics_file", "plots_file", "runs_dir"):
        parser.add_argument(name, type=Path)
    args = parser.parse_args()
    metrics = experiments.train_tinyvgg(params.load(), **vars(args))
    print(f"tinyvgg: test_acc {metrics['test_acc']:.4f}, test_loss {metrics['test_loss']:.4f}")


if __name__ == "__main__":
    run_cli(main)
