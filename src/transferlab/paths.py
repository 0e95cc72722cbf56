"""What each stage reads and writes: one typed object per stage, the same one from dvc.yaml to the
library.

A stage script's positional arguments are the fields of its paths object, in order, so the paths in
`dvc.yaml`'s `cmd`, the script's arguments and the library's parameters cannot drift apart by name.
Each field says whether the stage reads or writes it; `tests/test_dvc_yaml.py` checks every stage's
`cmd` against `dvc.yaml` with that: what a stage reads is among its deps, what it writes is exactly
its outs, metrics and plots.
"""

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

READS, WRITES = "reads", "writes"


def reads(description: str):
    return dataclasses.field(metadata={"role": READS, "help": description})


def writes(description: str, section: str = "outs"):
    """A path the stage writes, declared in `section` of its dvc.yaml entry: outs, metrics or plots."""
    return dataclasses.field(metadata={"role": WRITES, "help": description, "section": section})


@dataclass(frozen=True)
class DownloadPaths:
    dataset_dir: Path = writes("the canonical dataset")
    raw_dir: Path = dataclasses.field(
        default=Path("data/raw"),
        metadata={"role": None, "help": "where the CIFAR-10 archive is downloaded (not a DVC output)"},
    )


@dataclass(frozen=True)
class SubsetPaths:
    dataset_dir: Path = reads("the canonical dataset")
    subsets_dir: Path = writes("one JSON file of indices per subset")


@dataclass(frozen=True)
class TinyVGGPaths:
    dataset_dir: Path = reads("the canonical dataset")
    subsets_dir: Path = reads("the subsets")
    model_file: Path = writes("the trained model")
    metrics_file: Path = writes("final train and validation metrics")
    plots_dir: Path = writes(
        "per-epoch loss and accuracy curves, train and validation (loss.json, accuracy.json)", "plots"
    )
    runs_dir: Path = writes("the TensorBoard run")


@dataclass(frozen=True)
class TransferPaths:
    dataset_dir: Path = reads("the canonical dataset")
    subsets_dir: Path = reads("the subsets")
    models_dir: Path = writes("one trained model per experiment")
    metrics_file: Path = writes("every experiment's final train and validation metrics")
    plots_dir: Path = writes("the per-epoch curves of the best experiment per backbone, depth and train size", "plots")
    runs_dir: Path = writes("one TensorBoard run per experiment")
    summaries_dir: Path = writes("torchinfo summaries, one per backbone")


@dataclass(frozen=True)
class EvaluatePaths:
    dataset_dir: Path = reads("the canonical dataset")
    subsets_dir: Path = reads("the subsets")
    tinyvgg_file: Path = reads("the TinyVGG model")
    transfer_dir: Path = reads("the transfer experiments' models")
    evaluation_file: Path = writes("every model's validation and test metrics")
    predicted_file: Path = writes("every model's predicted class for each validation and test image")
    summary_file: Path = writes("accuracy against train size, per backbone", "plots")
    runs_dir: Path = writes("the TensorBoard run: projector and the HParams configuration")


@dataclass(frozen=True)
class SelectBestPaths:
    dataset_dir: Path = reads("the canonical dataset")
    subsets_dir: Path = reads("the subsets")
    evaluation_file: Path = reads("every model's validation and test metrics")
    predicted_file: Path = reads("every model's predicted class for each validation and test image")
    tinyvgg_file: Path = reads("the TinyVGG model")
    transfer_dir: Path = reads("the transfer experiments' models")
    best_metrics_file: Path = writes(
        "the headline: the winner chosen on validation, its test accuracy and interval", "metrics"
    )
    leaderboard_file: Path = writes("every model ranked on validation, with test accuracy and interval (Markdown)")
    best_model_file: Path = writes("the exported best model")
    predictions_file: Path = writes("predictions on random test images (PNG)", "plots")
    confusion_dir: Path = writes("test confusion matrices of the winner and TinyVGG", "plots")
    runs_dir: Path = writes(
        "the TensorBoard run: the winner's and TinyVGG's PR curves, confusion and predictions figures"
    )


Paths = TypeVar("Paths")


def parse(paths_type: type[Paths], description: str, argv: list[str] | None = None) -> Paths:
    """The stage's paths from its command line: one positional argument per field, in order (a field
    with a default is an option, `--raw-dir`)."""
    parser = argparse.ArgumentParser(description=description)
    for field in dataclasses.fields(paths_type):
        help_text = field.metadata["help"]
        if field.default is dataclasses.MISSING:
            parser.add_argument(field.name, type=Path, help=f"{field.metadata['role']}: {help_text}")
        else:
            parser.add_argument(
                f"--{field.name.replace('_', '-')}",
                type=Path,
                default=field.default,
                help=f"{help_text} (default: {field.default})",
            )
    return paths_type(**vars(parser.parse_args(argv)))


def reading(paths: object) -> list[Path]:
    """The paths the stage reads."""
    return [getattr(paths, f.name) for f in dataclasses.fields(paths) if f.metadata["role"] == READS]


def writing(paths: object) -> dict[str, list[Path]]:
    """The paths the stage writes, by dvc.yaml section (outs, metrics, plots)."""
    sections = {"outs": [], "metrics": [], "plots": []}
    for f in dataclasses.fields(paths):
        if f.metadata["role"] == WRITES:
            sections[f.metadata["section"]].append(getattr(paths, f.name))
    return sections
