"""Partial fine-tuning (`trainable_stages` N > 0): the backbone's last N stages train with the head,
on cached activations of its frozen part, exactly as they would through the whole network."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training import RecordingRun, assert_same_state, counting_steps, saved_epochs
from test_transfer import assert_same_experiment
from torch import nn
from torch.utils.data import TensorDataset

from helpers.projects import commit_all, copy_project, run
from transferlab import backbones, engine, evaluation, model_files, networks, params, registry
from transferlab.checkpoints import Checkpoints
from transferlab.features import FeatureCache, FeatureCaches
from transferlab.torchfiles import load_torch
from transferlab.training import TrainingRun, fit
from transferlab.transfer_kinds import LastStages

CPU = torch.device("cpu")
SEED, EPOCHS = 3, 2
SETTINGS = params.TrainingParams(batch_size=4, optimizer="adam", lr=0.001, weight_decay=0.0)


class EvalMode(nn.Module):
    """A frozen part that stays in eval mode (its BatchNorm statistics fixed) while the model trains."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x):
        return self.module(x)


def _images_and_labels(n: int, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), torch.as_tensor(rng.integers(0, 3, n))


def _fit_through_the_whole_network(backbone, head, train, test) -> nn.Module:
    """The naive way: every epoch's images through the frozen part (eval mode) and the tail."""
    frozen, tail = backbones.split(copy.deepcopy(backbone.features), 1)
    networks.freeze(frozen)
    network = nn.Sequential(backbone.transform, EvalMode(frozen), networks.TailModel(tail, head))
    generator = torch.Generator().manual_seed(SEED)
    trainable = [p for p in network.parameters() if p.requires_grad]
    engine.train(
        network,
        engine.batch_loader(train, SETTINGS.batch_size, generator),
        engine.batch_loader(test, SETTINGS.batch_size),
        nn.CrossEntropyLoss(),
        engine.make_optimizer(SETTINGS.optimizer, trainable, SETTINGS.lr),
        EPOCHS,
        CPU,
    )
    return network[2]


def test_a_tail_trained_on_cached_activations_equals_the_tail_trained_through_the_whole_network(tmp_path):
    backbone = backbones.load("effnet_lite0", 64)
    (train_images, train_labels), (test_images, test_labels) = _images_and_labels(10, 0), _images_and_labels(6, 1)
    cache = FeatureCache("effnet_lite0", 64, tmp_path, load=lambda *_: backbone, trainable_stages=1)
    LastStages.prepare(cache)
    engine.seed_everything(SEED, CPU)
    config = LastStages.make_config("effnet_lite0", 64, 16, "torch", trainable_stages=1)
    cached = LastStages.new(cache, ["a", "b", "c"], config).scorer
    train = TensorDataset(LastStages.inputs_of(cache, train_images, 4, CPU), train_labels)
    test = TensorDataset(LastStages.inputs_of(cache, test_images, 4, CPU), test_labels)
    assert train.tensors[0].shape == (10, 192, 2, 2)  # what enters lite0's last stage
    states = Checkpoints(tmp_path / "states", keep_every_epoch=False)
    fit(TrainingRun(cached, train, test, SETTINGS, SEED), EPOCHS, CPU, RecordingRun(), states, desc="t")

    engine.seed_everything(SEED, CPU)
    head = networks.transfer_head("effnet_lite0", 3)
    naive = _fit_through_the_whole_network(
        backbone,
        head,
        TensorDataset(torch.as_tensor(train_images).permute(0, 3, 1, 2), train_labels),
        TensorDataset(torch.as_tensor(test_images).permute(0, 3, 1, 2), test_labels),
    )
    pretrained = backbones.split(backbone.features, 1)[1].state_dict()
    assert_same_state(cached.state_dict(), naive.state_dict())  # the same training, bit for bit ...
    trained_stage = "tail.0.0.conv_pw.weight"  # ... which moved the tail's weights and BatchNorm statistics
    assert not torch.allclose(cached.state_dict()[trained_stage], pretrained[trained_stage.removeprefix("tail.")])
    assert not torch.equal(cached.state_dict()["tail.0.0.bn1.running_mean"], pretrained["0.0.bn1.running_mean"])


def test_zero_trainable_stages_is_the_frozen_path_byte_for_byte(grid_run):
    alone = grid_run(epochs=1, cache="alone")
    with_partial = grid_run(epochs=1, trainable_stages=[0, 1], cache="both")
    name = "6_images-effnet_lite0-lr_0.001-wd_0-seed_42-1_epochs"
    assert_same_experiment(name, *alone, *with_partial)
    for _, out in (alone, with_partial):
        assert (out / "models" / f"{name}.pt").read_bytes() == (alone[1] / "models" / f"{name}.pt").read_bytes()
        assert (out / "summaries/effnet_lite0.txt").read_text() == (alone[1] / "summaries/effnet_lite0.txt").read_text()
    model_file = load_torch(alone[1] / "models" / f"{name}.pt")
    assert set(model_file["state_dict"]) == {"1.weight", "1.bias"}  # the head alone, as it always was
    assert "trainable_stages" not in model_file["config"]
    assert list(with_partial[0]) == [name, "6_images-effnet_lite0+1_stages-lr_0.001-wd_0-seed_42-1_epochs"]


def test_partial_grid_caches_activations_once_and_continues_runs_from_kept_states(grid_run, tmp_path, monkeypatch):
    steps = counting_steps(monkeypatch)
    results, out = grid_run(epochs=[1, 2], trainable_stages=1)
    assert len(steps) == 2  # the 2-epoch run continues the 1-epoch one
    name = "6_images-effnet_lite0+1_stages-lr_0.001-wd_0-seed_42-2_epochs"
    assert list(results) == ["6_images-effnet_lite0+1_stages-lr_0.001-wd_0-seed_42-1_epochs", name]
    assert (out / "runs/6_images/effnet_lite0+1_stages/lr_0.001-wd_0-seed_42/2_epochs").is_dir()
    summary = (out / "summaries/effnet_lite0+1_stages.txt").read_text()
    assert "frozen features but the last 1 stages and the conv head" in summary
    boundary = tmp_path / "features/features/effnet_lite0_32px/before_last_1_stages"
    (shard,) = boundary.glob("*/*.pt")
    assert load_torch(shard)["features"].shape == (9, 192, 1, 1)  # 6 train + 3 validation images
    assert list(saved_epochs(tmp_path / "features/tails").values()) == [[1, 2]]
    lite0 = registry.info("effnet_lite0")
    assert results[name]["total_params"] == lite0.params + lite0.num_features * 3 + 3
    assert lite0.num_features * 3 < results[name]["trainable_params"] < lite0.params / 2

    again, again_out = grid_run(epochs=[2, 3], trainable_stages=1)
    assert len(steps) == 2 + 1  # epoch 2 is kept; 3 continues it
    assert list(boundary.glob("*/*.pt")) == [shard]  # no image went through the backbone again
    fresh = grid_run(epochs=3, trainable_stages=1, cache="fresh")
    assert_same_experiment("6_images-effnet_lite0+1_stages-lr_0.001-wd_0-seed_42-3_epochs", again, again_out, *fresh)


def test_a_partly_fine_tuned_model_scores_from_activations_and_runs_on_raw_images(grid_run, tmp_path):
    from transferlab.predict import predict
    from transferlab.selection import exported

    _, out = grid_run(epochs=1, trainable_stages=2)
    model_file = load_torch(out / "models/6_images-effnet_lite0+2_stages-lr_0.001-wd_0-seed_42-1_epochs.pt")
    assert model_file["config"]["trainable_stages"] == 2
    assert {key.split(".")[0] for key in model_file["state_dict"]} == {"tail", "head"}
    model = model_files.from_model_file(model_file)
    images = grid_run.dataset.test.images
    from_activations = evaluation.logits_on(model, images, FeatureCaches(tmp_path / "features"), CPU)
    with torch.inference_mode():
        from_images = model.network(model.preprocess(images))
    torch.testing.assert_close(from_activations, from_images, rtol=1e-2, atol=1e-2)
    pretrained = model_files.from_model_file({**model_file, "state_dict": _pretrained_tail_state(model_file)})
    with torch.inference_mode():
        assert not torch.allclose(pretrained.network(pretrained.preprocess(images)), from_images)

    exported_file = tmp_path / "best.pt"
    torch.save(exported(model, "partial", "crop"), exported_file)
    image_file = next(Path("images/test").rglob("*.png"))
    (label, probability) = predict([image_file], exported_file)[0]
    assert label in model.classes and 0 < probability <= 1


def _pretrained_tail_state(model_file: dict) -> dict:
    """The model file's weights with its stages back at their pretrained values (its head kept)."""
    features = backbones.load("effnet_lite0", 32).features
    tail = networks.TailModel(backbones.split(features, 2)[1], networks.transfer_head("effnet_lite0", 3))
    state = tail.state_dict()
    return {key: model_file["state_dict"][key] if key.startswith("head.") else state[key] for key in state}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"trainable_stages": 8}, "trainable_stages must be an integer <= 7, got 8"),
        ({"trainable_stages": [0, -1]}, "trainable_stages must be an integer >= 0, got -1"),
        ({"trainable_stages": "last"}, "trainable_stages must be an integer, got 'last'"),
        (
            {"trainable_stages": [0, 1], "transfer": {"freeze": False}},
            "trainable_stages must be 0 with transfer.freeze: false",
        ),
    ],
)
def test_a_bad_trainable_stages_is_one_clear_line(params_dict, raw, message):
    from transferlab.errors import UserError

    params_dict["transfer"].update(raw.pop("transfer", {}))
    params_dict.update(raw)
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        params.parse(json.loads(json.dumps(params_dict)))


@pytest.mark.slow
def test_dvc_exp_run_compares_depths_in_one_grid_and_predicts_with_the_best(
    pipeline_project, pipeline_source, tmp_path
):
    project = copy_project(pipeline_project, tmp_path / "project")  # after a complete `dvc repro`
    commit_all(project, "baseline")
    # batches of 8 and 4: lite0's last stage at 32 px sees 1 x 1 maps
    run(["dvc", "exp", "run", "-S", "train_size=12", "-S", "epochs=2", "-S", "trainable_stages=[0,1]"], project)

    names = [f"12_images-effnet_lite0{depth}-lr_0.05-wd_0-seed_42-2_epochs" for depth in ("", "+1_stages")]
    assert list(json.loads((project / "reports/transfer.json").read_text())) == names
    evaluation = json.loads((project / "reports/evaluation.json").read_text())
    assert set(evaluation) == {"tinyvgg", *names}
    leaderboard = (project / "reports/leaderboard.md").read_text()
    assert all(f"| {name} |" in leaderboard for name in names)
    assert (project / "reports/model_summaries/effnet_lite0+1_stages.txt").is_file()
    diff = json.loads(run(["dvc", "metrics", "diff", "--all", "--json"], project).stdout)
    assert diff["metrics/best.json"]["name"]["new"] in [*names, "tinyvgg"]  # the headline names the winner
    image = next((pipeline_source / "test").rglob("*.png"))
    predicted = run(["python", "-m", "transferlab", "predict", str(image)], project).stdout.split()
    assert predicted[0] == str(image) and predicted[1] in ("red", "green", "blue")
