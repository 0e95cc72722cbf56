"""train_transfer stage: the experiment grid of pretrained backbones with new heads."""
import argparse
from pathlib import Path

from transferlab.errors import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import experiments, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("data_dir", "subsets_dir", "models_dir", "metrics_file", "plots_dir", "runs_dir",
                 "summaries_dir"):
        parser.add_argument(name, type=Path)
    parser.add_argument("--cache-dir", type=Path, help="feature cache (default: $TRANSFERLAB_CACHE_DIR or the user cache)")
    args = parser.parse_args()
    results = experiments.train_transfer(params.load(), **vars(args))
    for name, metrics in results.items():
        print(f"{name}: test_acc {metrics['test_acc']:.4f}, test_loss {metrics['test_loss']:.4f}")


if __name__ == "__main__":
    run_cli(main)
