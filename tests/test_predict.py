"""predict: classify image files with an exported model, from Python and from the command line."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab import __main__ as cli_module
from transferlab import networks
from transferlab.decoding import decode_image
from transferlab.entrypoints import DEBUG_ENV
from transferlab.errors import UserError
from transferlab.kinds import TinyVGGModel
from transferlab.predict import predict
from transferlab.torchfiles import save_torch

CLASSES = ["airplane", "cat", "dog", "ship"]
IMAGE_SIZE = 16


@pytest.fixture
def project(tmp_path):
    """A directory with models/best.pt (a tiny TinyVGG exported like select_best does) and images."""
    torch.manual_seed(3)  # a seed for which the four images get three different classes
    model = TinyVGGModel.new(CLASSES, hidden_units=4, image_size=IMAGE_SIZE)
    with torch.no_grad():  # larger weights, so the images get clearly different predictions
        for p in model.scorer.parameters():
            p.mul_(4)
    model_file = model.model_file(hparams={})
    save_torch(tmp_path / "models" / "best.pt", {**model_file, "name": "tinyvgg", "transform": "uint8 / 255"})

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / "noise.png")
    Image.new("RGB", (24, 20), (200, 30, 30)).save(images / "red.jpg")  # resized to 16 x 16
    Image.new("RGBA", (16, 16), (10, 10, 220, 128)).save(images / "blue.png")
    Image.new("L", (40, 40), 250).save(images / "grey.bmp")
    (images / "notes.png").write_text("not an image")
    return tmp_path


def image_files(project):
    return [project / "images" / name for name in ("noise.png", "red.jpg", "blue.png", "grey.bmp")]


def expected_predictions(project, paths, resize="crop"):
    """Decode, fit and classify directly with the model that was exported."""
    model_file = torch.load(project / "models" / "best.pt", weights_only=True)
    model = networks.TinyVGG(4, len(CLASSES), IMAGE_SIZE)
    model.load_state_dict(model_file["state_dict"])
    model.eval()
    batch = np.stack([decode_image(p.read_bytes(), IMAGE_SIZE, resize) for p in paths])
    with torch.no_grad():
        probabilities = model(torch.as_tensor(batch).permute(0, 3, 1, 2).float() / 255).softmax(dim=1)
    return [(CLASSES[int(row.argmax())], float(row.max())) for row in probabilities]


def test_predict_returns_class_and_probability_per_image(project):
    paths = image_files(project)
    result = predict(paths, project / "models" / "best.pt")
    assert len(result) == len(paths)
    expected = expected_predictions(project, paths)
    for (label, probability), (expected_label, expected_probability) in zip(result, expected, strict=True):
        assert label in CLASSES
        assert isinstance(probability, float)
        assert 1 / len(CLASSES) <= probability <= 1
        assert label == expected_label
        assert probability == pytest.approx(expected_probability, abs=1e-6)
    assert len({label for label, _ in result}) > 1  # the images really are classified one by one


@pytest.mark.parametrize("resize", ["crop", "pad"])
def test_predict_fits_a_photo_as_the_dataset_was(project, resize):
    """The exported model says how the download stage fitted images to squares; a wide photo is
    fitted the same way (a striped one: cropping and padding keep different stripes)."""
    best = project / "models" / "best.pt"
    save_torch(best, {**torch.load(best, weights_only=True), "resize": resize})
    stripes = np.repeat(np.random.default_rng(1).integers(0, 256, (1, 12, 3), dtype=np.uint8), 16, axis=0)
    Image.fromarray(np.repeat(stripes, 4, axis=1)).save(project / "images" / "wide.png")  # 48 x 16
    [(label, probability)] = predict([project / "images" / "wide.png"], best)
    [(expected_label, expected_probability)] = expected_predictions(project, [project / "images" / "wide.png"], resize)
    assert (label, probability) == (expected_label, pytest.approx(expected_probability, abs=1e-6))
    other = "pad" if resize == "crop" else "crop"
    assert expected_predictions(project, [project / "images" / "wide.png"], other)[0][1] != pytest.approx(probability)


def test_predict_keeps_the_order_of_the_files(project):
    paths = image_files(project)
    forward = predict(paths, project / "models" / "best.pt")
    backward = predict(paths[::-1], project / "models" / "best.pt")
    assert [label for label, _ in backward] == [label for label, _ in forward[::-1]]
    for (_, p), (_, q) in zip(backward, forward[::-1], strict=True):
        assert p == pytest.approx(q, abs=1e-6)


def test_predict_uses_the_default_model_path(project, monkeypatch):
    monkeypatch.chdir(project)
    path = image_files(project)[:1]
    assert predict(path) == predict(path, project / "models" / "best.pt")


def test_missing_image_is_a_user_error_with_the_path(project):
    missing = project / "images" / "nope.png"
    with pytest.raises(UserError, match="no such file") as err:
        predict([image_files(project)[0], missing], project / "models" / "best.pt")
    assert str(missing) in str(err.value)


def test_directory_is_not_an_image_file(project):
    with pytest.raises(UserError, match="no such file") as err:
        predict([project / "images"], project / "models" / "best.pt")
    assert str(project / "images") in str(err.value)


def test_non_image_file_is_a_user_error_with_the_path(project):
    bad = project / "images" / "notes.png"
    with pytest.raises(UserError, match="not a readable image") as err:
        predict([bad], project / "models" / "best.pt")
    assert str(bad) in str(err.value)


def test_missing_model_file_is_a_user_error_with_the_path(project):
    missing = project / "elsewhere" / "best.pt"
    with pytest.raises(UserError) as err:
        predict(image_files(project), missing)
    assert str(missing) in str(err.value)
    assert "dvc repro" in str(err.value)


def test_cli_in_process_turns_user_errors_into_one_line(project, monkeypatch, capsys):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    missing = project / "missing.png"
    monkeypatch.setattr(
        sys, "argv", ["transferlab", "predict", str(missing), "--model", str(project / "models" / "best.pt")]
    )
    with pytest.raises(SystemExit) as exit_info:
        cli_module.cli()
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {missing}: no such file\n"

    monkeypatch.setenv(DEBUG_ENV, "1")  # debugging: the real exception instead
    with pytest.raises(UserError):
        cli_module.cli()


# --- the real command line ------------------------------------------------------------------------


def run_cli(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != DEBUG_ENV}
    return subprocess.run(
        [sys.executable, "-m", "transferlab", "predict", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_one_line_per_image(project):
    relative = [str(p.relative_to(project)) for p in image_files(project)]
    result = run_cli(relative, cwd=project)  # models/best.pt by default
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(relative)
    expected = expected_predictions(project, image_files(project))
    for line, path, (label, probability) in zip(lines, relative, expected, strict=True):
        printed_path, printed_label, printed_probability = line.split("\t")
        assert (printed_path, printed_label) == (path, label)
        assert len(printed_probability.split(".")[1]) == 4
        assert float(printed_probability) == pytest.approx(probability, abs=1e-4)


def test_cli_bad_path_is_one_error_line_and_exit_code_1(project):
    missing = Path("images") / "missing.jpg"
    result = run_cli([str(image_files(project)[0]), str(missing)], cwd=project)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert str(missing) in lines[0]
