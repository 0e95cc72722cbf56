"""Command line: `python -m transferlab predict IMAGE...` (also installed as `transferlab`)."""

import argparse
from pathlib import Path

from transferlab.entrypoints import imports_without_gc, run_cli

with imports_without_gc():
    from transferlab import predict


def main() -> None:
    parser = argparse.ArgumentParser(prog="transferlab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    predict_parser = commands.add_parser("predict", help="classify image files with the exported best model")
    predict_parser.add_argument("images", nargs="+", type=Path)
    predict_parser.add_argument(
        "--model", type=Path, default=predict.DEFAULT_MODEL, help=f"exported model (default: {predict.DEFAULT_MODEL})"
    )
    args = parser.parse_args()
    for path, (label, probability) in zip(args.images, predict.predict(args.images, args.model), strict=True):
        print(f"{path}\t{label}\t{probability:.4f}")


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
