"""params.yaml: loading, validation and typo detection."""

import re
from pathlib import Path

import pytest
import yaml

from transferlab import params
from transferlab.errors import UserError
from transferlab.registry import BACKBONE_NAMES

PARAMS_YAML = Path(__file__).resolve().parents[1] / "params.yaml"


def parse_error(raw: dict) -> str:
    with pytest.raises(UserError) as excinfo:
        params.parse(raw)
    return str(excinfo.value)


def write(tmp_path, raw) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


# --- the repository's file ------------------------------------------------------------------------


def test_repository_params_yaml_parses():
    p = params.load(PARAMS_YAML)
    assert p.seed == 42
    assert p.data == params.DataParams(
        source="data/cifar10.yaml", image_size=32, resize="crop", test_fraction=0.2, split_seed=42
    )
    assert p.subset == params.SubsetParams(tinyvgg_train_size=10000, val_size=1000, test_size=2000)
    assert p.tinyvgg == params.TinyVGGParams(
        hidden_units=10, epochs=10, batch_size=32, optimizer="adam", lr=0.001, weight_decay=0.0
    )
    assert p.model == ("effnet_b0", "effnet_b2")
    assert p.train_size == (500, 1000)
    assert p.epochs == (5, 10)
    assert (p.lr, p.weight_decay, p.train_seed) == ((0.001,), (0.0,), (42,))
    assert p.transfer == params.TransferParams(
        freeze=True, image_size=None, runtime="auto", batch_size=32, optimizer="adam"
    )
    assert p.select_best == params.SelectBestParams(metric="val_acc", predictions=12)


def test_parse_of_the_dict_matches_load(params_dict):
    assert params.parse(params_dict) == params.load(PARAMS_YAML)


def test_load_reads_the_given_file(tmp_path, params_dict):
    params_dict["seed"] = 7
    params_dict["data"]["source"] = "data/my_images.zip"
    p = params.load(write(tmp_path, params_dict))
    assert p.seed == 7
    assert p.data.source == "data/my_images.zip"


def test_params_dict_fixture_is_a_fresh_copy(params_dict):
    params_dict["tinyvgg"]["epochs"] = 999
    assert yaml.safe_load(PARAMS_YAML.read_text())["tinyvgg"]["epochs"] != 999


# --- unknown and missing keys ---------------------------------------------------------------------


def test_typo_in_a_section_suggests_the_key(params_dict):
    params_dict["tinyvgg"]["epoch"] = params_dict["tinyvgg"].pop("epochs")
    message = parse_error(params_dict)
    assert "unknown key 'tinyvgg.epoch'" in message
    assert "did you mean 'tinyvgg.epochs'?" in message
    assert "batch_size, optimizer, lr, weight_decay, hidden_units, epochs" in message  # the section's valid keys


def test_unknown_top_level_key(params_dict):
    params_dict["learning_rate"] = 0.1
    message = parse_error(params_dict)
    assert "unknown key 'learning_rate'" in message
    assert "did you mean" not in message
    keys = "seed, processes, data, subset, tinyvgg, model, trainable_stages, train_size, epochs, lr, weight_decay"
    assert f"{keys}, train_seed, transfer, select_best" in message


def test_top_level_typo_suggests_the_key(params_dict):
    params_dict["models"] = params_dict.pop("model")
    assert "unknown key 'models' (did you mean 'model'?)" in parse_error(params_dict)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        (None, "seed"),
        (None, "select_best"),
        ("data", "image_size"),
        ("transfer", "optimizer"),
        (None, "lr"),
        ("subset", "val_size"),
    ],
)
def test_missing_key(params_dict, section, key):
    (params_dict if section is None else params_dict[section]).pop(key)
    full = key if section is None else f"{section}.{key}"
    assert f"missing key {full}" in parse_error(params_dict)


def test_several_missing_keys_are_all_named(params_dict):
    del params_dict["tinyvgg"]["lr"], params_dict["tinyvgg"]["optimizer"]
    assert "missing keys tinyvgg.optimizer, tinyvgg.lr" in parse_error(params_dict)


@pytest.mark.parametrize("raw", [None, [], "seed: 1", 42])
def test_top_level_must_be_a_mapping(raw):
    with pytest.raises(UserError, match="top level must be a mapping"):
        params.parse(raw)


def test_section_must_be_a_mapping(params_dict):
    params_dict["tinyvgg"] = 5
    assert "tinyvgg must be a mapping" in parse_error(params_dict)


def test_empty_file_is_rejected(tmp_path):
    with pytest.raises(UserError, match="top level must be a mapping"):
        params.load(write(tmp_path, ""))


# --- types ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("tinyvgg", "epochs", "10", "tinyvgg.epochs must be an integer, got '10'"),
        ("tinyvgg", "epochs", True, "tinyvgg.epochs must be an integer, got True"),
        ("tinyvgg", "epochs", 10.0, "tinyvgg.epochs must be an integer, got 10.0"),
        ("tinyvgg", "epochs", 2.5, "tinyvgg.epochs must be an integer, got 2.5"),
        ("tinyvgg", "epochs", None, "tinyvgg.epochs must be an integer, got None"),
        (None, "seed", False, "seed must be an integer, got False"),
        (None, "processes", "2", "processes must be an integer, got '2'"),
        ("data", "image_size", "32", "data.image_size must be an integer"),
        ("data", "source", 5, "data.source must be a string, got 5"),
        ("data", "source", None, "data.source must be a string"),
        ("data", "resize", "stretch", "data.resize is 'stretch'; choose one of: crop, squash, pad"),
        ("data", "test_fraction", 0, "data.test_fraction must be greater than 0, got 0.0"),
        ("data", "test_fraction", 0.95, "data.test_fraction must be a number <= 0.9, got 0.95"),
        ("data", "test_fraction", "20%", "data.test_fraction must be a number, got '20%'"),
        ("data", "split_seed", -1, "data.split_seed must be an integer >= 0, got -1"),
        ("transfer", "freeze", "yes please", "transfer.freeze must be true or false"),
        ("transfer", "freeze", 1, "transfer.freeze must be true or false, got 1"),
        (None, "lr", "fast", "lr must be a number, got 'fast'"),
        (None, "lr", [0.01, True], "lr must be a number, got True"),
        (None, "weight_decay", "none", "weight_decay must be a number, got 'none'"),
        (None, "train_seed", [1, 2.5], "train_seed must be an integer, got 2.5"),
        ("transfer", "image_size", "224", "transfer.image_size must be an integer"),
        ("transfer", "image_size", 224.0, "transfer.image_size must be an integer"),
        (None, "train_size", [500, "1000"], "train_size must be an integer, got '1000'"),
        (None, "epochs", [5, True], "epochs must be an integer, got True"),
        (None, "train_size", 2.5, "train_size must be an integer, got 2.5"),
        (None, "train_size", [[500]], "train_size must be an integer, got [500]"),
    ],
)
def test_wrong_types(params_dict, section, key, value, expected):
    (params_dict if section is None else params_dict[section])[key] = value
    assert expected in parse_error(params_dict)


def test_int_is_accepted_for_a_float(params_dict):
    params_dict["tinyvgg"]["lr"] = 1
    p = params.parse(params_dict)
    assert p.tinyvgg.lr == 1.0 and isinstance(p.tinyvgg.lr, float)


def test_transfer_image_size_accepts_an_integer_or_null(params_dict):
    params_dict["transfer"]["image_size"] = 64
    assert params.parse(params_dict).transfer.image_size == 64
    params_dict["transfer"]["image_size"] = None
    assert params.parse(params_dict).transfer.image_size is None


# --- ranges ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("data", "image_size"),
        ("subset", "tinyvgg_train_size"),
        ("subset", "test_size"),
        ("tinyvgg", "hidden_units"),
        ("tinyvgg", "epochs"),
        ("tinyvgg", "batch_size"),
        ("transfer", "batch_size"),
        ("transfer", "image_size"),
        ("select_best", "predictions"),
        (None, "train_size"),
        (None, "epochs"),
        (None, "processes"),
    ],
)
@pytest.mark.parametrize("value", [0, -3])
def test_zero_and_negative_sizes_are_rejected(params_dict, section, key, value):
    (params_dict if section is None else params_dict[section])[key] = value
    full = key if section is None else f"{section}.{key}"
    minimum = 4 if full == "data.image_size" else 1
    assert f"{full} must be an integer >= {minimum}, got {value}" in parse_error(params_dict)


def test_image_size_below_tinyvgg_minimum_is_rejected(params_dict):
    params_dict["data"]["image_size"] = 3
    assert "data.image_size must be an integer >= 4, got 3" in parse_error(params_dict)


def test_zero_inside_a_grid_list_is_rejected(params_dict):
    params_dict["train_size"] = [500, 0]
    assert "train_size must be an integer >= 1, got 0" in parse_error(params_dict)


def test_seed_may_be_zero_but_not_negative(params_dict):
    params_dict["seed"] = 0
    assert params.parse(params_dict).seed == 0
    params_dict["seed"] = -1
    assert "seed must be an integer >= 0, got -1" in parse_error(params_dict)


@pytest.mark.parametrize("value", [0, 0.0, -0.01])
def test_learning_rate_must_be_positive(params_dict, value):
    params_dict["tinyvgg"]["lr"] = value
    assert "tinyvgg.lr must be greater than 0" in parse_error(params_dict)
    params_dict["tinyvgg"]["lr"], params_dict["lr"] = 0.001, [0.01, value]
    assert "lr must be greater than 0" in parse_error(params_dict)


def test_weight_decay_may_be_zero_but_not_negative(params_dict):
    params_dict["weight_decay"] = [0, 1e-4]
    assert params.parse(params_dict).weight_decay == (0.0, 1e-4)
    params_dict["tinyvgg"]["weight_decay"] = -0.1
    assert "tinyvgg.weight_decay must be a number >= 0, got -0.1" in parse_error(params_dict)


def test_size_of_one_is_accepted(params_dict):
    params_dict["subset"]["test_size"] = 1
    params_dict["train_size"] = 1
    p = params.parse(params_dict)
    assert p.subset.test_size == 1 and p.train_size == (1,)


# --- choices --------------------------------------------------------------------------------------


def test_unknown_model_lists_the_choices(params_dict):
    params_dict["model"] = ["effnet_b0", "resnet50"]
    message = parse_error(params_dict)
    assert "model is 'resnet50'" in message
    assert f"choose one of: {', '.join(BACKBONE_NAMES)}" in message
    assert set(BACKBONE_NAMES) == {"effnet_b0", "effnet_b2", "effnet_lite0", "effnet_lite2"}


@pytest.mark.parametrize("section", ["tinyvgg", "transfer"])
def test_unknown_optimizer(params_dict, section):
    params_dict[section]["optimizer"] = "rmsprop"
    assert f"{section}.optimizer is 'rmsprop'; choose one of: adam, adamw, sgd" in parse_error(params_dict)


def test_optimizer_is_case_sensitive(params_dict):
    params_dict["tinyvgg"]["optimizer"] = "Adam"
    assert "choose one of: adam, adamw, sgd" in parse_error(params_dict)


def test_unknown_selection_metric(params_dict):
    params_dict["select_best"]["metric"] = "accuracy"
    assert "select_best.metric is 'accuracy'; choose one of: val_acc, val_loss" in parse_error(params_dict)


@pytest.mark.parametrize(("metric", "instead"), [("test_acc", "val_acc"), ("test_loss", "val_loss")])
def test_a_test_metric_is_refused_saying_why(params_dict, metric, instead):
    params_dict["select_best"]["metric"] = metric
    message = parse_error(params_dict)
    assert f"select_best.metric is {metric}, but the test subset is never used to choose" in message
    assert f"rank by {instead}" in message and "\n" not in message


def test_valid_choices_are_accepted(params_dict):
    params_dict["tinyvgg"]["optimizer"] = "sgd"
    params_dict["select_best"]["metric"] = "val_loss"
    params_dict["model"] = list(BACKBONE_NAMES)
    p = params.parse(params_dict)
    assert p.tinyvgg.optimizer == "sgd" and p.select_best.metric == "val_loss"
    assert p.model == BACKBONE_NAMES


# --- grid axes ------------------------------------------------------------------------------------


def test_grid_axes_accept_a_scalar(params_dict):
    params_dict.update(model="effnet_lite0", train_size=300, epochs=3)
    p = params.parse(params_dict)
    assert (p.model, p.train_size, p.epochs) == (("effnet_lite0",), (300,), (3,))


def test_grid_axes_accept_a_list_and_keep_its_order(params_dict):
    params_dict.update(model=["effnet_lite2", "effnet_b0"], train_size=[1000, 10, 500], epochs=[2])
    p = params.parse(params_dict)
    assert p.model == ("effnet_lite2", "effnet_b0")
    assert p.train_size == (1000, 10, 500)
    assert p.epochs == (2,)


def test_grid_axes_are_deduplicated(params_dict):
    params_dict.update(model=["effnet_b0", "effnet_b2", "effnet_b0"], train_size=[500, 500, 100, 500], epochs=[5, 5])
    p = params.parse(params_dict)
    assert p.model == ("effnet_b0", "effnet_b2")
    assert p.train_size == (500, 100)
    assert p.epochs == (5,)


@pytest.mark.parametrize("key", ["model", "train_size", "epochs"])
def test_empty_grid_list_is_rejected(params_dict, key):
    params_dict[key] = []
    assert f"{key} must not be an empty list" in parse_error(params_dict)


def test_only_grid_axes_take_lists(params_dict):
    params_dict["tinyvgg"]["epochs"] = [5, 10]
    assert "tinyvgg.epochs must be an integer, got [5, 10]" in parse_error(params_dict)


# --- the file -------------------------------------------------------------------------------------


def test_errors_name_the_file(tmp_path, params_dict):
    params_dict["tinyvgg"]["epoch"] = params_dict["tinyvgg"].pop("epochs")
    path = write(tmp_path, params_dict)
    with pytest.raises(UserError, match=re.escape(f"{path}: unknown key 'tinyvgg.epoch'")):
        params.load(path)


def test_malformed_yaml_reports_the_line(tmp_path):
    text = PARAMS_YAML.read_text().replace("  batch_size: 32\n", "  batch_size: [32\n", 1)
    path = write(tmp_path, text)
    bad_line = text.splitlines().index("  batch_size: [32") + 1
    with pytest.raises(UserError) as excinfo:
        params.load(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path} is malformed at line ")
    line = int(re.search(r"at line (\d+), column \d+", message).group(1))
    assert line == bad_line + 1  # the unclosed list is noticed at the next line's ':'
    assert "expected ',' or ']'" in message


def test_malformed_yaml_bad_indentation_reports_the_line(tmp_path):
    path = write(tmp_path, "seed: 42\ndata:\n  source: cifar10\n image_size: 32\n")
    with pytest.raises(UserError, match=r"malformed at line 4, column 2"):
        params.load(path)


def test_malformed_yaml_tab_reports_the_line(tmp_path):
    path = write(tmp_path, "seed: 42\ndata:\n\tsource: cifar10\n")
    with pytest.raises(UserError, match=r"malformed at line 3"):
        params.load(path)


def test_missing_params_file(tmp_path):
    missing = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(UserError, match="not found") as excinfo:
        params.load(missing)
    assert str(missing) in str(excinfo.value)


def test_load_defaults_to_params_yaml_in_the_working_directory(tmp_path, monkeypatch, params_dict):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="params.yaml not found"):
        params.load()
    params_dict["seed"] = 3
    write(tmp_path, params_dict)
    assert params.load().seed == 3
