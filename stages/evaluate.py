"""evaluate stage: every trained model on the shared test subset, with confusion matrices."""
import argparse
from pathlib import Path

from transferlab.errors import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("data_dir", "subsets_dir", "tinyvgg_file", "transfer_dir", "metrics_file", "confusion_dir"):
        parser.add_argument(name, type=Path)
    parser.add_argument("--cache-dir", type=Path, help="feature cache (default: $TRANSFERLAB_CACHE_DIR or the user cache)")
    args = parser.parse_args()
    for name, metrics in evaluation.evaluate(**vars(args)).items():
        print(f"{name}: test_acc {metrics['test_acc']:.4f}, test_loss {metrics['test_loss']:.4f}")


if __name__ == "__main__":
    run_cli(main)
