"""select_best stage: rank every model, export the best, draw its predictions."""
import argparse
from pathlib import Path

from transferlab.errors import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import evaluation, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("data_dir", "subsets_dir", "evaluation_file", "tinyvgg_file", "transfer_dir",
                 "best_metrics_file", "leaderboard_file", "best_model_file", "predictions_file", "runs_dir"):
        parser.add_argument(name, type=Path)
    parser.add_argument("--cache-dir", type=Path, help="feature cache (default: $TRANSFERLAB_CACHE_DIR or the user cache)")
    args = parser.parse_args()
    p = params.load()
    best = evaluation.select_best(p.select_best.metric, p.seed, p.select_best.predictions, **vars(args))
    print(f"best: {best['name']} (test_acc {best['test_acc']:.4f}, test_loss {best['test_loss']:.4f})")


if __name__ == "__main__":
    run_cli(main)
