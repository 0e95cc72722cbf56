"""A real-data run to look at: a copy of this checkout's committed tree in DEST, CIFAR-10 from a
local archive, the offline backbones lite0 and lite2 at 500 and 1,000 images, 5 and 10 epochs, on
the 2,000-image test subset, then `dvc repro`. The screenshots in docs/ are taken of such a run
(`make screenshots PROJECT=DEST`).

    python docs/browser/real_run.py DEST --source ../shared/data/cifar10-jpg.tar.gz

Its machine-wide cache is DEST/../machine_cache (TRANSFERLAB_CACHE_DIR), so it shares nothing with
other runs on the machine.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRID = {"model": ["effnet_lite0", "effnet_lite2"], "train_size": [500, 1000], "epochs": [5, 10]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="a new folder for the project copy")
    parser.add_argument("--source", type=Path, required=True, help="the CIFAR-10 archive (an ImageFolder .tar.gz)")
    args = parser.parse_args()
    dest = args.dest.resolve()
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(dest)], check=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"]["source"] = str(args.source.resolve())
    params.update(GRID)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "TRANSFERLAB_CACHE_DIR": str(dest.parent / "machine_cache"),
    }
    subprocess.run(["dvc", "repro"], cwd=dest, env=env, check=True)


if __name__ == "__main__":
    main()
