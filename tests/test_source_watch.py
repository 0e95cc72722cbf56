"""DVC watches `data.source`: editing, adding or removing an image of a local folder or archive makes
`dvc status` report the download stage changed and `dvc repro` rerun it, with no --force; an
unchanged source reruns nothing. Real `dvc` in a temporary project, download stage only."""

import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.images import make_image_folder
from helpers.projects import make_project, run, tiny_params

pytestmark = pytest.mark.slow


def download_changed(project: Path) -> bool:
    """Whether `dvc status download` reports the stage's deps changed."""
    status = run(["dvc", "status", "download"], project).stdout
    return "changed deps" in status


def repro_download(project: Path) -> str:
    return run(["dvc", "repro", "download"], project).stdout


def project_on(tmp_path: Path, source: Path) -> Path:
    project = make_project(tmp_path / "project", tiny_params(source))
    assert "Running stage 'download'" in repro_download(project)
    assert not download_changed(project)
    return project


def train_images(project: Path) -> int:
    return len(np.load(project / "data/prepared/train_labels.npy"))


def test_an_edited_added_or_removed_image_of_a_folder_reruns_the_download(tmp_path):
    source = make_image_folder(tmp_path / "photos", n_train=4, n_test=2, size=8)
    project = project_on(tmp_path, source)
    assert "Running stage" not in repro_download(project)  # unchanged: nothing reruns

    image = source / "train" / "a" / "img_000.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(image)  # edited in place
    assert download_changed(project)
    assert "Running stage 'download'" in repro_download(project)
    assert not download_changed(project)

    Image.new("RGB", (8, 8), (9, 9, 9)).save(source / "train" / "a" / "new.png")  # added
    assert download_changed(project)
    repro_download(project)
    assert train_images(project) == 3 * 4 + 1

    (source / "train" / "a" / "new.png").unlink()  # removed
    assert download_changed(project)
    repro_download(project)
    assert train_images(project) == 3 * 4


def test_an_archive_rewritten_with_another_image_reruns_the_download(tmp_path):
    folder = make_image_folder(tmp_path / "photos", n_train=4, n_test=2, size=8)
    archive = tmp_path / "photos.tar.gz"

    def pack():
        with tarfile.open(archive, "w:gz") as tar:
            for split in ("train", "test"):
                tar.add(folder / split, split)

    pack()
    project = project_on(tmp_path, archive)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "test" / "b" / "img_001.png")
    pack()
    assert download_changed(project)
    assert "Running stage 'download'" in repro_download(project)
