"""params.yaml: loaded and validated in one place, with typo detection.

Every key is required (params.yaml is the single source of defaults); an unknown or misspelt key,
a wrong type or an out-of-range value is one UserError line naming the key and what is allowed.
"""

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from transferlab.errors import UserError
from transferlab.registry import BACKBONE_NAMES, BLOCK_STAGES

PARAMS_FILE = "params.yaml"
Optimizer = Literal["adam", "adamw", "sgd"]
SelectionMetric = Literal["val_acc", "val_loss"]
# The test subset is scored once per model, to report; choosing on it would overstate the winner.
TEST_METRICS = ("test_acc", "test_loss")
Runtime = Literal["auto", "onnxruntime", "torch"]  # what computes frozen features: see `runtimes`
Resize = Literal["crop", "squash", "pad"]  # `decoding` (which imports Pillow) says what each does


def positive():
    return field(metadata={"min": 1})


def not_negative():
    return field(metadata={"min": 0})


@dataclass(frozen=True)
class DataParams:
    source: str  # data/cifar10.yaml (CIFAR-10's card), or a path to an ImageFolder directory or archive
    image_size: int = field(metadata={"min": 4})  # TinyVGG pools twice
    resize: Resize  # how a non-square image becomes S x S (`decoding`)
    # a flat <class>/<image> folder: the fraction of each class held out as the test split, by a seeded hash
    test_fraction: float = field(metadata={"max": 0.9})
    split_seed: int = not_negative()


@dataclass(frozen=True)
class SubsetParams:
    tinyvgg_train_size: int = positive()
    val_size: int = positive()  # drawn from the train split, disjoint from every train subset
    test_size: int = positive()


@dataclass(frozen=True)
class TrainingParams:
    """What every training run reads: the engine's batch size and optimizer."""

    batch_size: int = positive()
    optimizer: Optimizer
    lr: float
    weight_decay: float = not_negative()


@dataclass(frozen=True)
class TinyVGGParams(TrainingParams):
    hidden_units: int = positive()
    epochs: int = positive()


@dataclass(frozen=True)
class TransferParams:
    """What every experiment of the grid shares (its learning rate, weight decay and seed are axes)."""

    freeze: bool
    image_size: int | None = positive()  # None: the pretrained weights' own input size
    runtime: Runtime
    batch_size: int = positive()
    optimizer: Optimizer


@dataclass(frozen=True)
class SelectBestParams:
    metric: SelectionMetric
    predictions: int = positive()  # test images shown in reports/predictions.png


@dataclass(frozen=True)
class Params:
    seed: int = field(metadata={"min": 0})
    processes: int = positive()  # worker processes training each model (`distributed`)
    data: DataParams
    subset: SubsetParams
    tinyvgg: TinyVGGParams
    # The transfer-learning grid: each axis is one value or a list; every combination is one experiment.
    model: tuple[Literal[BACKBONE_NAMES], ...]
    # How many of the backbone's last block stages train with the head (0: the head alone).
    trainable_stages: tuple[int, ...] = field(metadata={"min": 0, "max": BLOCK_STAGES})
    train_size: tuple[int, ...] = positive()
    epochs: tuple[int, ...] = positive()
    lr: tuple[float, ...]
    weight_decay: tuple[float, ...] = not_negative()
    # the experiments' own seeds (new head, batch order); several give mean and spread over seeds
    train_seed: tuple[int, ...] = not_negative()
    transfer: TransferParams
    select_best: SelectBestParams


def load(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} not found (run from the project root)") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{path} is malformed{where}: {problem}") from None
    return parse(raw, where=str(path))


def parse(raw: object, where: str = PARAMS_FILE) -> Params:
    _refuse_test_metric(raw, where)
    params = _convert_section(Params, raw, prefix="", where=where)
    if not params.transfer.freeze and params.trainable_stages != (0,):
        raise UserError(
            f"{where}: trainable_stages must be 0 with transfer.freeze: false (the whole backbone trains); "
            "set transfer.freeze: true to train only its last stages"
        )
    return params


def _refuse_test_metric(raw: object, where: str) -> None:
    """A test metric as select_best's ranking metric is refused, saying why (before the generic
    "choose one of" message, which would not)."""
    section = raw.get("select_best") if isinstance(raw, dict) else None
    if isinstance(section, dict) and (metric := section.get("metric")) in TEST_METRICS:
        raise UserError(
            f"{where}: select_best.metric is {metric}, but the test subset is never used to choose: it is scored "
            f"once per model to report an unbiased accuracy, and the best of many on it is optimistic; "
            f"rank by val_{metric.removeprefix('test_')} (or val_acc / val_loss)"
        )


def _convert_section(cls, raw, prefix: str, where: str):
    name = prefix.rstrip(".") or "top level"
    if not isinstance(raw, dict):
        raise UserError(f"{where}: {name} must be a mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise UserError(
                f"{where}: unknown key '{prefix}{key}'{hint}; valid keys"
                f"{' in ' + name if prefix else ''}: {', '.join(fields)}"
            )
    missing = [f"{prefix}{k}" for k in fields if k not in raw]
    if missing:
        raise UserError(f"{where}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    values = {
        key: _convert_value(hints[key], raw[key], f"{prefix}{key}", f.metadata, where) for key, f in fields.items()
    }
    return cls(**values)


def _convert_value(hint, value, key: str, metadata, where: str):
    if dataclasses.is_dataclass(hint):
        return _convert_section(hint, value, prefix=f"{key}.", where=where)
    origin = typing.get_origin(hint)
    if origin is tuple:  # a grid axis: one value or a list of values
        items = value if isinstance(value, list) else [value]
        if not items:
            raise UserError(f"{where}: {key} must not be an empty list")
        converted = [_convert_value(hint.__args__[0], item, key, metadata, where) for item in items]
        return tuple(dict.fromkeys(converted))
    if origin in (types.UnionType, typing.Union):  # X | None
        if value is None:
            return None
        return _convert_value(hint.__args__[0], value, key, metadata, where)
    if origin is Literal:
        if value not in hint.__args__:
            raise UserError(f"{where}: {key} is {value!r}; choose one of: {', '.join(hint.__args__)}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise UserError(f"{where}: {key} must be {_type_name(hint)}, got {value!r}")
    minimum, maximum = metadata.get("min"), metadata.get("max")
    if hint is float and minimum is None and value <= 0:
        raise UserError(f"{where}: {key} must be greater than 0, got {value!r}")
    if hint is float and minimum is not None and value < minimum:
        raise UserError(f"{where}: {key} must be a number >= {minimum}, got {value!r}")
    if minimum is not None and value < minimum:
        raise UserError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise UserError(f"{where}: {key} must be {_type_name(hint)} <= {maximum}, got {value!r}")
    return value


def _type_name(hint) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[hint]
