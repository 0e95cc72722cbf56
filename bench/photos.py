"""Benchmark: your own photos at real size and count - the pipeline on a photo-like folder at two sizes.

From --source (CIFAR-10's JPEG archive; its train split) it builds a flat `<class>/<image>` folder of
the largest of --sizes images, each upscaled to a random size and aspect (long side --long-sides,
seeded per image, JPEG), and the smaller sizes as the first images of each class of it (hard links).
Then, for each size in one project copy, at data.image_size --data-image-size with one backbone
(--models), TinyVGG, train, validation and test subsets each 1/--share of the images (so every
stage's work grows with them): every stage timed alone in pipeline order from an empty cache
(`dvc repro --force --no-run-cache --single-item STAGE`), then a no-op `dvc repro` (DVC checks the
folder it depends on). Last, the download stage itself on the largest folder (the least start-up
per image) with one decoding process and with every core (TRANSFERLAB_WORKERS), its outputs compared.

Reported: per stage, seconds per 1,000 images and peak RSS at each size; the ratio of s/1,000 images
and of peak RSS per image between the largest and smallest size (1.0: exactly linear; less: fixed
costs, bounded memory) and the peak RSS's growth per added image; every stage's peak RSS against the
bound canonical size x 1.3 + 1.5 GB; the decode speed-up from one core to all.

  python bench/photos.py --source ../shared/data/cifar10-jpg.tar.gz            # BENCHMARKS.md's run
  python bench/photos.py --source ARCHIVE --sizes 60 120 --data-image-size 32 --share 6   # a smoke run
"""

import hashlib
import io
import os
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import yaml
from PIL import Image

if not __package__:  # run as `python bench/photos.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.report import Table, Target, targets

STAGES = ("download", "subset", "train_tinyvgg", "train_transfer", "evaluate", "select_best")  # pipeline order
FORCED = ["dvc", "repro", "--force", "--no-run-cache", "--single-item"]  # each stage alone, from scratch
JPEG_QUALITY = 90
GB, MIB = 1e9, 2**20
TARGETS = {
    "time": Target("{}: s per 1,000 images, {} / {} images", "<=", 1.1, "x"),
    "memory": Target("{}: peak RSS per image, {} / {} images", "<=", 1.1, "x"),
    "bound": Target("{}: peak RSS at {} images", "<=", 0, " MiB", ".0f"),
    "speed_up": Target("download: one decoding process / {}", ">=", 1.5, "x"),
    "identical": Target("canonical dataset identical whatever the worker count", "==", True),
}


def arguments(parser) -> None:
    parser.set_defaults(models=["effnet_lite0"], epochs=[5], data_image_size=224)
    parser.add_argument("--sizes", nargs="+", type=int, default=[6000, 18000], help="images in each folder")
    parser.add_argument("--share", type=int, default=12, help="each subset holds 1/SHARE of the images")
    parser.add_argument("--long-sides", nargs=2, type=int, default=[240, 480], help="a photo's long side, px")
    parser.add_argument("--seed", type=int, default=0, help="seeds each photo's size and aspect")


def params(args, images: int | None = None, source: Path | None = None) -> dict:
    """params.yaml for a folder of `images` photos at `source`: subsets 1/--share of them each, one
    TinyVGG epoch, the grid --models x --epochs at one train size."""
    images = images or min(args.sizes)
    params = yaml.safe_load((harness.ROOT / "params.yaml").read_text())
    params["data"].update(source=str(source or args.source), image_size=args.data_image_size, resize="crop")
    part = images // args.share
    params["subset"] = {"tinyvgg_train_size": part, "val_size": part, "test_size": part}
    params["tinyvgg"].update(epochs=1)
    params.update(model=args.models, trainable_stages=0, train_size=part, epochs=args.epochs, train_seed=42)
    params["transfer"].update(image_size=args.image_size, batch_size=args.batch_size, freeze=True)
    params["select_best"]["predictions"] = 4
    return params


# --- the photo-like folders -------------------------------------------------------------------------


def archive_images(archive: Path, per_class: int) -> list[tuple[str, bytes]]:
    """(class, JPEG bytes) of the first `per_class` train images of each class of a CIFAR-10
    ImageFolder archive, by name."""
    chosen: dict[str, list[tuple[str, bytes]]] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if member.isfile() and len(parts) == 3 and parts[0] == "train":
                chosen.setdefault(parts[1], []).append((parts[2], tar.extractfile(member).read()))
    if any(len(images) < per_class for images in chosen.values()):
        raise SystemExit(f"{archive} has fewer than {per_class} train images in a class")
    return [(cls, data) for cls in sorted(chosen) for _, data in sorted(chosen[cls])[:per_class]]


def photo_like(encoded: bytes, long_sides: tuple[int, int], seed: list[int]) -> bytes:
    """The image upscaled to a random size and aspect (long side in `long_sides`, the short side
    half to all of it, landscape or portrait), as a JPEG."""
    rng = np.random.default_rng(seed)
    long = int(rng.integers(long_sides[0], long_sides[1] + 1))
    short = round(long * rng.uniform(0.5, 1.0))
    size = (long, short) if rng.random() < 0.5 else (short, long)
    out = io.BytesIO()
    Image.open(io.BytesIO(encoded)).convert("RGB").resize(size, Image.Resampling.BICUBIC).save(
        out, "JPEG", quality=JPEG_QUALITY
    )
    return out.getvalue()


def _write_photo(job: tuple) -> None:
    path, encoded, long_sides, seed = job
    path.write_bytes(photo_like(encoded, long_sides, seed))


def build_folders(
    archive: Path, root: Path, sizes: list[int], long_sides: tuple[int, int], seed: int
) -> dict[int, Path]:
    """A `<class>/<image>` folder per size under `root`; each smaller one holds the first images of
    each class of the largest (hard links)."""
    images = archive_images(archive, max(sizes) // 10)
    classes = sorted({cls for cls, _ in images})
    per_class = len(images) // len(classes)
    largest = root / str(max(sizes))
    jobs = []
    for index, (cls, encoded) in enumerate(images):
        path = largest / cls / f"{index % per_class:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        jobs.append((path, encoded, tuple(long_sides), [seed, index]))
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(_write_photo, jobs, chunksize=64))
    folders = {max(sizes): largest}
    for size in sorted(set(sizes) - {max(sizes)}):
        folders[size] = root / str(size)
        for cls in classes:
            (folders[size] / cls).mkdir(parents=True)
            for name in sorted(os.listdir(largest / cls))[: size // len(classes)]:
                os.link(largest / cls / name, folders[size] / cls / name)
    return folders


# --- the runs ---------------------------------------------------------------------------------------


def run_size(project: harness.Project, args, images: int, folder: Path) -> dict:
    """Every stage on the folder of `images` photos, alone and from an empty cache, then a no-op repro."""
    print(f"{images} images: the pipeline, stage by stage ...", flush=True)
    project.write_params(params(args, images, folder))
    cache_dir = project.cache(str(images), fresh=True)
    stages = {stage: project.measure([*FORCED, stage], cache_dir) for stage in STAGES}
    no_op = project.measure(["dvc", "repro"], cache_dir)
    return {"images": images, "canonical_bytes": canonical_bytes(project), "stages": stages, "no_op_repro": no_op}


def canonical_bytes(project: harness.Project) -> int:
    return sum(path.stat().st_size for path in (project.path / "data/prepared").iterdir())


def decode_speed_up(project: harness.Project, args, folders: dict[int, Path]) -> dict:
    """The download stage on the largest folder with one decoding process and with every core."""
    images = max(folders)
    project.write_params(params(args, images, folders[images]))
    runs = {}
    for workers in (1, len(os.sched_getaffinity(0))):
        print(f"download of {images} images with {workers} decoding process(es) ...", flush=True)
        out = f"data/decoded_{workers}"
        env = {**project.env(project.cache("unused")), "TRANSFERLAB_WORKERS": str(workers)}
        command = [sys.executable, "stages/download.py", out]
        runs[workers] = harness.measure(command, project.path, env, project.log)
        runs[workers]["md5"] = {p.name: md5(p) for p in sorted((project.path / out).iterdir())}
    return {"images": images, "runs": runs}


def md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def run(project: harness.Project, args) -> dict:
    print(f"building photo-like folders of {args.sizes} images ...", flush=True)
    start = time.perf_counter()
    folders = build_folders(Path(args.source), project.workdir / "photos", args.sizes, args.long_sides, args.seed)
    built = time.perf_counter() - start
    sizes = [run_size(project, args, images, folders[images]) for images in sorted(folders)]
    return {"build_s": built, "sizes": sizes, "decode": decode_speed_up(project, args, folders)}


# --- report -----------------------------------------------------------------------------------------


def memory_bound_mib(canonical: int) -> float:
    """The issue's bound on any stage's peak RSS: the canonical dataset x 1.3 + 1.5 GB."""
    return (canonical * 1.3 + 1.5 * GB) / MIB


def report(r: dict) -> list[Table]:
    small, large = r["sizes"][0], r["sizes"][-1]
    n_small, n_large = small["images"], large["images"]
    rows, checks = [], []
    for stage in STAGES:
        s, b = small["stages"][stage], large["stages"][stage]
        per_1000 = (1000 * s["wall_s"] / n_small, 1000 * b["wall_s"] / n_large)
        time_ratio = per_1000[1] / per_1000[0]
        memory_ratio = (b["peak_rss_mib"] / n_large) / (s["peak_rss_mib"] / n_small)
        marginal_kib = (b["peak_rss_mib"] - s["peak_rss_mib"]) * 1024 / (n_large - n_small)
        rows.append((stage, *per_1000, time_ratio, s["peak_rss_mib"], b["peak_rss_mib"], memory_ratio, marginal_kib))
        checks.append((TARGETS["time"].named(stage, n_large, n_small), time_ratio))
        checks.append((TARGETS["memory"].named(stage, n_large, n_small), memory_ratio))
    for size in r["sizes"]:
        bound = replace(TARGETS["bound"], limit=round(memory_bound_mib(size["canonical_bytes"])))
        stage, peak = max(size["stages"].items(), key=lambda item: item[1]["peak_rss_mib"])
        checks.append((bound.named(f"largest ({stage})", size["images"]), peak["peak_rss_mib"]))
    decode = r["decode"]
    (one, single), (workers, every) = sorted(decode["runs"].items(), key=lambda item: int(item[0]))
    speed_up = single["wall_s"] / every["wall_s"]
    detail = f"{single['wall_s']:.1f} s / {every['wall_s']:.1f} s, {decode['images']} images"
    checks.append((TARGETS["speed_up"].named(f"{workers}", speed_up), speed_up, detail))
    checks.append((TARGETS["identical"], single["md5"] == every["md5"]))
    sizes = [
        (s["images"], s["canonical_bytes"] / MIB, memory_bound_mib(s["canonical_bytes"]), s["no_op_repro"]["wall_s"])
        for s in r["sizes"]
    ]
    columns = {
        "stage": "",
        f"s/1000 img @ {n_small}": ".2f",
        f"s/1000 img @ {n_large}": ".2f",
        "time ratio": ".2f",
        f"peak RSS MiB @ {n_small}": ".0f",
        f"peak RSS MiB @ {n_large}": ".0f",
        "RSS/image ratio": ".2f",
        "KiB per added image": ".0f",
    }
    note = (
        "ratio: per-image cost at the larger size / at the smaller (1.00: linear; below: fixed costs); "
        f"KiB per added image: the peak RSS's growth / the {n_large - n_small} images added"
    )
    return [
        Table("per stage, each alone from an empty cache", columns, rows, [note]),
        Table(
            "the folders",
            {"images": ",", "canonical MiB": ".0f", "memory bound MiB": ".0f", "no-op dvc repro s": ".1f"},
            sizes,
            [f"built in {r['build_s']:.0f} s; memory bound: canonical x 1.3 + 1.5 GB"],
        ),
        targets(checks),
    ]


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
