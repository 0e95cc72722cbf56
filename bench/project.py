"""A temporary copy of the project as a git repository, and commands timed in it.

Every benchmark runs on a copy, not on the checkout: its params are the benchmark's, its outputs
and DVC state are its own, and the code it runs is the copy's (PYTHONPATH is the copy's `src`, and
`python -m bench.phases` runs in the copy), so edits to the checkout during a run change nothing.
Commands are measured from outside, each in its own process: wall time, and peak RSS from
`os.wait4` (`ru_maxrss` of the process tree, i.e. its largest process). Each command gets the
machine-wide feature cache the caller names (TRANSFERLAB_CACHE_DIR) and runs on the CPU.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GIT_IDENTITY = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
# Not copied: the checkout's own lock file (the copy runs from scratch, with the benchmark's params).
NOT_COPIED = {"dvc.lock"}


def bench_params(
    source: Path,
    *,
    models,
    train_sizes,
    epochs,
    test_size: int,
    tinyvgg_size: int,
    image_size: int | None,
    data_image_size: int = 32,
    batch_size: int = 32,
) -> dict:
    """params.yaml with the benchmark's data and grid, and a small TinyVGG: TinyVGG is setup only
    (untimed), so it is kept cheap; everything else keeps params.yaml's values (seed, optimizer, lr)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = {"source": str(Path(source).resolve()), "image_size": data_image_size}
    params["subset"] = {"tinyvgg_train_size": tinyvgg_size, "test_size": test_size}
    params["tinyvgg"].update(epochs=1, hidden_units=10, batch_size=32)
    params.update(model=models, train_size=train_sizes, epochs=epochs)
    params["transfer"].update(image_size=image_size, batch_size=batch_size, freeze=True)
    params["select_best"]["predictions"] = 4  # a small predictions.png: select_best is not measured
    return params


def checkout_files(root: Path = ROOT) -> list[str]:
    """The checkout's files as git sees them: tracked, plus untracked ones that are not ignored
    (new modules not added yet), minus NOT_COPIED. Build outputs, caches and data are ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        raise SystemExit(f"the benchmark copies the project's git checkout; {root}: {listed.stderr.strip()}")
    names = sorted(set(filter(None, listed.stdout.split("\0"))) - NOT_COPIED)
    return [name for name in names if (root / name).is_file()]  # tracked but deleted files are gone


class Project:
    """A copy of the project in `workdir/project`, the log of every command run in it, and the
    machine-wide caches given to those commands (`workdir/cache_<name>`)."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.path = self.workdir / "project"
        self.log = self.workdir / "bench.log"

    @classmethod
    def create(cls, workdir: Path, params: dict) -> "Project":
        """Copy the checkout's files, write `params` and commit it all in a fresh git repository."""
        project = cls(workdir)
        project.path.mkdir(parents=True)  # never into an existing project
        for name in checkout_files():
            (project.path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, project.path / name, follow_symlinks=False)
        project.write_params(params)
        project.git("init", "-q")
        project.commit("init")
        return project

    def write_params(self, params: dict) -> None:
        (self.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def git(self, *args: str) -> None:
        subprocess.run(["git", *GIT_IDENTITY, *args], cwd=self.path, check=True, capture_output=True)

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-qm", message)

    def cache(self, name: str) -> Path:
        """The machine-wide cache directory `name` of this benchmark: `workdir/cache_<name>`."""
        return self.workdir / f"cache_{name}"

    def fresh_cache(self, name: str) -> Path:
        """The cache directory `name`, emptied (deleted; the first command to use it creates it)."""
        shutil.rmtree(self.cache(name), ignore_errors=True)
        return self.cache(name)

    def env(self, cache_dir: Path) -> dict[str, str]:
        """The environment of a command in the copy: this interpreter's tools (dvc, python) first on
        PATH, the CPU, `cache_dir` as the machine-wide cache, and the copy's own code."""
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "TRANSFERLAB_DEVICE": "cpu",
            "TRANSFERLAB_CACHE_DIR": str(cache_dir),
            "PYTHONPATH": str(self.path / "src"),
        }
        env.pop("TRANSFERLAB_DEBUG", None)
        return env

    def measure(self, command: list[str], cache_dir: Path) -> dict:
        """Run `command` in the copy (output to the log); its wall time (s) and peak RSS (MiB).
        Exits with a pointer to the log if it fails."""
        with open(self.log, "a") as out:
            out.write(f"\n$ {' '.join(command)}\n")
            out.flush()
            start = time.perf_counter()
            process = subprocess.Popen(
                command, cwd=self.path, env=self.env(cache_dir), stdout=out, stderr=subprocess.STDOUT
            )
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({process.returncode}); see {self.log}")
        return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}

    def output(self, command: list[str]) -> str:
        """The standard output of an untimed command in the copy (e.g. `dvc exp show --json`)."""
        result = subprocess.run(
            command, cwd=self.path, env=self.env(self.cache("unused")), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout

    def run_phase(self, phase: str, config: dict, cache_dir: Path) -> dict:
        """Run `python -m bench.phases PHASE CONFIG_JSON RESULT_JSON` in the copy, measured like
        any command; its wall time and peak RSS merged with the result the phase wrote."""
        result_file = self.workdir / f"phase_{phase}.json"
        result_file.unlink(missing_ok=True)
        stats = self.measure(
            [sys.executable, "-m", "bench.phases", phase, json.dumps(config), str(result_file)], cache_dir
        )
        return {**stats, **json.loads(result_file.read_text())}


def fastest(runs: list[dict]) -> dict:
    """The run with the smallest wall time."""
    return min(runs, key=lambda run: run["wall_s"])


def finish(results: dict, json_file: Path | None, workdir: Path, keep: bool) -> dict:
    """Write `results` as JSON when asked, and remove the work directory unless it is to be kept."""
    if json_file:
        json_file.write_text(json.dumps(results, indent=2))
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return results
