"""Bad input table: each case exits non-zero with one `error:` line on stderr, no traceback, and
leaves the outputs that already exist untouched. Runs the real stage scripts and CLI."""

import functools
import hashlib
import http.server
import io
import re
import struct
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path

import pytest
import yaml

from helpers.images import make_image_folder
from helpers.projects import make_project, run, tiny_params, write_params
from transferlab.kinds import TinyVGGModel
from transferlab.torchfiles import save_torch

pytestmark = pytest.mark.slow

# what else stderr may hold: a tqdm bar, the download stage's line naming the layout it found
PROGRESS = re.compile(r"^\s*\d+%\||: (flat|split) layout ")
DOWNLOAD = ["python", "stages/download.py", "data/prepared"]
SUBSET = ["python", "stages/subset.py", "data/prepared", "data/subsets"]
PREDICT = ["python", "-m", "transferlab", "predict"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels (no pixel data): enough to trip Pillow's bomb check."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


def tar_with(path: Path, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls in ("a", "b"):
                info = tarfile.TarInfo(f"{split}/{cls}/ok.png")
                body = make_png()
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def make_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def folder(tmp: Path, name: str, classes=("a", "b")) -> Path:
    return make_image_folder(tmp / name, classes=classes, n_train=4, n_test=2, size=8)


def empty_class(tmp: Path) -> Path:
    root = folder(tmp, "empty_class")
    (root / "train" / "c").mkdir()
    (root / "test" / "c").mkdir()
    return root


def mixed_layout(tmp: Path) -> Path:
    root = folder(tmp, "mixed")
    (root / "dog").mkdir()
    (root / "train" / "a" / "img_000.png").rename(root / "dog" / "img_000.png")
    return root


def bomb(tmp: Path) -> Path:
    root = folder(tmp, "bomb")
    (root / "train" / "a" / "huge.png").write_bytes(png_header_only(20_000, 20_000))
    return root


def corrupt_archive(tmp: Path) -> Path:
    path = tmp / "corrupt.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"not really gzip" * 10)
    return path


def zip_with_dotdot(tmp: Path) -> Path:
    path = tmp / "dotdot.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/a/ok.png", make_png())
        zf.writestr("../../evil.png", make_png())
    return path


@pytest.fixture(scope="module")
def garbage_mirror(tmp_path_factory):
    """A local HTTP server whose cifar-10-python.tar.gz is garbage (fails the MD5 check)."""
    root = tmp_path_factory.mktemp("mirror")
    (root / "cifar-10-python.tar.gz").write_bytes(b"definitely not CIFAR-10" * 100)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"
    server.shutdown()


def set_key(dotted: str, value):
    def change(params: dict, tmp: Path) -> None:
        *parents, leaf = dotted.split(".")
        target = params
        for key in parents:
            target = target[key]
        target[leaf] = value(tmp) if callable(value) else value

    return change


def rename_key(old: str, new: str):
    def change(params: dict, tmp: Path) -> None:
        section, old_leaf = old.split(".")
        params[section][new.split(".")[1]] = params[section].pop(old_leaf)

    return change


# id: (params change, command, extra env, words the error line must contain)
CASES = {
    "unknown model": (set_key("model", "effnet_b7"), DOWNLOAD, {}, ["model", "effnet_lite0"]),
    "unknown params key": (
        rename_key("tinyvgg.epochs", "tinyvgg.epoch"),
        DOWNLOAD,
        {},
        ["tinyvgg.epoch", "tinyvgg.epochs"],
    ),
    "wrong type": (set_key("tinyvgg.lr", "fast"), DOWNLOAD, {}, ["tinyvgg.lr", "number"]),
    "negative size": (set_key("train_size", [500, -5]), DOWNLOAD, {}, ["train_size", ">= 1"]),
    "zero size": (set_key("subset.test_size", 0), DOWNLOAD, {}, ["subset.test_size", ">= 1"]),
    "non-integer size": (set_key("subset.test_size", 12.5), DOWNLOAD, {}, ["subset.test_size", "integer"]),
    "size larger than available": (
        set_key("subset.tinyvgg_train_size", 10_000),
        SUBSET,
        {},
        ["tinyvgg_train_size", "at most 12"],
    ),
    "epochs 0": (set_key("epochs", 0), DOWNLOAD, {}, ["epochs", ">= 1"]),
    "unknown data.source": (set_key("data.source", "cifar100"), DOWNLOAD, {}, ["cifar100", "does not exist"]),
    "missing source path": (
        set_key("data.source", lambda t: str(t / "nowhere")),
        DOWNLOAD,
        {},
        ["nowhere", "does not exist"],
    ),
    "empty class folder": (
        set_key("data.source", lambda t: str(empty_class(t))),
        DOWNLOAD,
        {},
        ["'c'", "no readable images"],
    ),
    "single class": (
        set_key("data.source", lambda t: str(folder(t, "one", classes=("only",)))),
        DOWNLOAD,
        {},
        ["single class"],
    ),
    "mixed layouts": (
        set_key("data.source", lambda t: str(mixed_layout(t))),
        DOWNLOAD,
        {},
        ["mixes split folders", "train/", "dog/", "one layout"],
    ),
    "no train/test folders": (set_key("data.source", lambda t: str(t)), DOWNLOAD, {}, ["train/<class>"]),
    "corrupt archive": (
        set_key("data.source", lambda t: str(corrupt_archive(t))),
        DOWNLOAD,
        {},
        ["cannot read archive"],
    ),
    "archive with .. member": (
        set_key("data.source", lambda t: str(zip_with_dotdot(t))),
        DOWNLOAD,
        {},
        ["unsafe", ".."],
    ),
    "archive with symlink member": (
        set_key(
            "data.source",
            lambda t: str(tar_with(t / "link.tar.gz", "train/a/l.png", tarfile.SYMTYPE, link="/etc/passwd")),
        ),
        DOWNLOAD,
        {},
        ["link member"],
    ),
    "archive with device member": (
        set_key("data.source", lambda t: str(tar_with(t / "dev.tar.gz", "train/a/d.png", tarfile.CHRTYPE))),
        DOWNLOAD,
        {},
        ["device member"],
    ),
    "decompression bomb": (
        set_key("data.source", lambda t: str(bomb(t))),
        DOWNLOAD,
        {},
        ["huge.png", "decompression-bomb"],
    ),
    "download checksum mismatch": (
        set_key("data.source", "data/cifar10.yaml"),
        DOWNLOAD,
        {"TRANSFERLAB_CIFAR10_URL": "{mirror}"},
        ["does not match", "removed it"],
    ),
    "offline download": (
        set_key("data.source", "data/cifar10.yaml"),
        DOWNLOAD,
        {"TRANSFERLAB_CIFAR10_URL": "http://127.0.0.1:9/cifar-10-python.tar.gz"},
        ["could not download", "data/raw/cifar-10-python.tar.gz", "data.source"],
    ),
    "predict on a missing file": (None, [*PREDICT, "nope.jpg"], {}, ["nope.jpg", "no such file"]),
    "predict on a non-image": (None, [*PREDICT, "params.yaml"], {}, ["params.yaml", "not a readable image"]),
    "predict with no exported model": (
        None,
        [*PREDICT, "--model", "models/missing.pt", "x.png"],
        {},
        ["no exported model", "models/missing.pt"],
    ),
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project whose download and subset stages ran, plus an exported model for predict."""
    source = make_image_folder(tmp_path_factory.mktemp("data") / "images", n_train=4, n_test=4, size=8)
    path = make_project(tmp_path_factory.mktemp("bad") / "project", tiny_params(source))
    params = tiny_params(source)
    params["subset"] = {"tinyvgg_train_size": 6, "val_size": 3, "test_size": 6}
    params["train_size"] = [3]
    write_params(path, params)
    run(["dvc", "repro", "subset"], path)
    save_torch(path / "models/best.pt", TinyVGGModel.new(["a", "b", "c"], 2, 16).model_file(hparams={}))
    return path


def snapshot(project: Path) -> dict[str, str]:
    """md5 of every file the pipeline wrote (data, models, params)."""
    files = [p for d in ("data", "models") for p in (project / d).rglob("*") if p.is_file()]
    return {
        str(p.relative_to(project)): hashlib.md5(p.read_bytes()).hexdigest() for p in files + [project / "dvc.lock"]
    }


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_line(project, tmp_path, garbage_mirror, case):
    change, command, extra_env, words = CASES[case]
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    if change:
        change(params, tmp_path)
        write_params(project, params)
    before = snapshot(project)
    env = {key: value.format(mirror=garbage_mirror) for key, value in extra_env.items()}
    try:
        result = run(command, project, check=False, env_extra=env, timeout=60)
    finally:
        (project / "params.yaml").write_text(original)
    lines = [line for line in result.stderr.strip().splitlines() if not PROGRESS.search(line)]
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert snapshot(project) == before
    assert not (project / "data/raw/cifar-10-python.tar.gz").exists()


def test_malformed_params_yaml(project):
    original = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text("seed: 42\ndata: [unclosed\n")
    try:
        result = run(DOWNLOAD, project, check=False)
    finally:
        (project / "params.yaml").write_text(original)
    assert result.returncode != 0 and result.stderr.startswith("error: params.yaml is malformed at line")
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_switch_shows_the_traceback(project):
    original = (project / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["model"] = "effnet_b7"
    write_params(project, params)
    try:
        result = run(DOWNLOAD, project, check=False, env_extra={"TRANSFERLAB_DEBUG": "1"})
    finally:
        (project / "params.yaml").write_text(original)
    assert result.returncode != 0 and "Traceback" in result.stderr and "UserError" in result.stderr
