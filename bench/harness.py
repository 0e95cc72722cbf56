"""What every benchmark shares: a temporary copy of the project, commands timed in it, phases run
in child processes inside it, the common command line, and the run around a scenario.

A scenario is a module with a docstring (its --help), `arguments(parser)` (its own options),
`params(args)` (the copy's first params.yaml), `run(project, args) -> results` and
`report(results) -> [report.Table]`; `main(scenario)` parses, copies, runs, prints and writes --json.

The copy is a fresh git repository of the checkout's files (tracked, plus untracked ones git does
not ignore; not dvc.lock) with the benchmark's params; its commands run its own code (PYTHONPATH is
its `src`), so edits to the checkout during a run change nothing. Each command is its own process:
wall time around it, peak RSS from `os.wait4` (ru_maxrss of the process tree: its largest process).

In-process approaches are phases: `project.run_phase("bench.grid:course", config, cache)` runs
`python -m bench.harness bench.grid:course CONFIG_JSON RESULT_JSON` in the copy, measured as above.
"""

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench import report

ROOT = Path(__file__).resolve().parents[1]
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]


def fastest(runs: list[dict]) -> dict:
    """The run with the smallest wall time."""
    return min(runs, key=lambda run: run["wall_s"])


def timed(function, *args) -> float:
    """The wall time of `function(*args)`, in seconds."""
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def measure(command: list[str], cwd: Path, env: dict, log: Path) -> dict:
    """Run `command` (output appended to `log`): its wall time (s) and peak RSS (MiB, its largest
    process). Exits with a pointer to the log if it fails."""
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}); see {log}")
    return {"wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}


def checkout_files(root: Path = ROOT) -> list[str]:
    """The checkout's files as git sees them (tracked, and untracked ones not ignored), but dvc.lock."""
    command = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        raise SystemExit(f"the benchmark copies the project's git checkout; {root}: {listed.stderr.strip()}")
    names = sorted(set(filter(None, listed.stdout.split("\0"))) - {"dvc.lock"})
    return [name for name in names if (root / name).is_file()]  # tracked but deleted files are gone


def bench_params(args: argparse.Namespace, **grid) -> dict:
    """params.yaml with the command line's data and grid (`grid` overrides: models, train_sizes,
    epochs, test_size) and a cheap TinyVGG (setup only, untimed); everything else (seed, optimizer,
    lr, runtime) as params.yaml has it."""
    grid = {key: getattr(args, key) for key in ("models", "train_sizes", "epochs", "test_size")} | grid
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source=str(Path(args.source).resolve()), image_size=args.data_image_size)
    # validation as large as the test subset: every experiment validates on it each epoch
    params["subset"] = {
        "tinyvgg_train_size": args.tinyvgg_size,
        "val_size": grid["test_size"],
        "test_size": grid["test_size"],
    }
    params["tinyvgg"].update(epochs=1, hidden_units=10, batch_size=32)
    params.update(model=grid["models"], train_size=grid["train_sizes"], epochs=grid["epochs"])
    params["transfer"].update(image_size=args.image_size, batch_size=args.batch_size, freeze=True)
    params["select_best"]["predictions"] = 4  # select_best is not measured
    return params


def short_name(hparams: dict) -> str:
    """<size>_images-<backbone label>-<epochs>_epochs: an experiment's name without its lr, weight
    decay and seed."""
    from transferlab import registry

    label = registry.label(hparams["model"], hparams.get("trainable_stages", 0))
    return f"{hparams['train_size']}_images-{label}-{hparams['epochs']}_epochs"


def phase_config(args: argparse.Namespace, params: dict, **extra) -> dict:
    """What the in-process approaches need: the grid, and the pipeline's seed and optimizer."""
    grid = {key: getattr(args, key) for key in ("models", "train_sizes", "epochs", "image_size", "batch_size")}
    optimizer = {"optimizer": params["transfer"]["optimizer"], "lr": params["lr"]}
    return {**grid, "seed": params["seed"], **optimizer, **extra}


class Project:
    """A copy of the project in `workdir/project`, its command log, and machine-wide feature caches
    for its commands (`workdir/cache_NAME`)."""

    def __init__(self, workdir: Path):
        self.workdir, self.path, self.log = Path(workdir), Path(workdir) / "project", Path(workdir) / "bench.log"

    @classmethod
    def create(cls, workdir: Path, params: dict) -> "Project":
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
        subprocess.run([*GIT, *args], cwd=self.path, check=True, capture_output=True)

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-qm", message)

    def cache(self, name: str, fresh: bool = False) -> Path:
        """Cache directory `name`; `fresh` empties it (the first command to use it creates it)."""
        if fresh:
            shutil.rmtree(self.workdir / f"cache_{name}", ignore_errors=True)
        return self.workdir / f"cache_{name}"

    def env(self, cache_dir: Path) -> dict[str, str]:
        """This interpreter's tools first on PATH, the CPU, `cache_dir`, and the copy's own code."""
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        env = {**os.environ, "PATH": path, "TRANSFERLAB_DEVICE": "cpu", "TRANSFERLAB_CACHE_DIR": str(cache_dir)}
        env["PYTHONPATH"] = str(self.path / "src")
        env.pop("TRANSFERLAB_DEBUG", None)
        return env

    def measure(self, command: list[str], cache_dir: Path) -> dict:
        return measure(command, self.path, self.env(cache_dir), self.log)

    def output(self, command: list[str]) -> str:
        """The standard output of an untimed command in the copy."""
        env = self.env(self.cache("unused"))
        result = subprocess.run(command, cwd=self.path, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout

    def run_phase(self, phase: str, config: dict, cache_dir: Path) -> dict:
        """Phase `MODULE:FUNCTION` on `config` in its own process in the copy: its wall time and
        peak RSS merged with what it returned."""
        result_file = self.workdir / f"phase_{phase.replace(':', '.')}.json"
        result_file.unlink(missing_ok=True)
        command = [sys.executable, "-m", "bench.harness", phase, json.dumps(config), str(result_file)]
        return {**self.measure(command, cache_dir), **json.loads(result_file.read_text())}

    def stage_accuracies(self) -> dict[str, float]:
        """The transfer experiments' test accuracies from the last evaluate, by the short name the
        references use (`short_name`: a benchmark's grid has one lr, weight decay and seed)."""
        evaluation = json.loads((self.path / "reports/evaluation.json").read_text())
        return {short_name(m["hparams"]): m["test_acc"] for name, m in evaluation.items() if name != "tinyvgg"}


def parser(scenario) -> argparse.ArgumentParser:
    """The options every benchmark has, then the scenario's own (which may change the defaults)."""
    p = argparse.ArgumentParser(description=scenario.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="data.source (ImageFolder dir or archive)")
    p.add_argument("--models", nargs="+", default=["effnet_lite0", "effnet_lite2"])
    p.add_argument("--train-sizes", nargs="+", type=int, default=[500, 1000])
    p.add_argument("--epochs", nargs="+", type=int, default=[5, 10])
    p.add_argument("--test-size", type=int, default=2000, help="the test subset")
    p.add_argument("--image-size", type=int, help="transfer.image_size (default: each backbone's own input size)")
    p.add_argument("--tinyvgg-size", type=int, default=1000, help="TinyVGG's subset (setup only, untimed)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--data-image-size", type=int, default=32, help="data.image_size")
    p.add_argument("--workdir", type=Path, help="keep the project copy here (default: a temporary dir, removed)")
    p.add_argument("--json", type=Path, help="also write the results and the report's tables as JSON")
    p.add_argument("--markdown", action="store_true", help="print the report's tables as Markdown")
    scenario.arguments(p)
    return p


def main(scenario, argv=None) -> dict:
    """Parse the command line, run the scenario in a new project copy, print and save its report."""
    args = parser(scenario).parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"bench-{Path(scenario.__file__).stem}-"))
    project = Project.create(workdir, scenario.params(args))
    print(f"work directory: {workdir} (log: {project.log})", flush=True)
    results = scenario.run(project, args)
    results["args"] = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    tables = scenario.report(results)
    print(report.render(tables, args.markdown))
    if args.json:
        args.json.write_text(json.dumps({**results, "report": report.as_json(tables)}, indent=2))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def phase_main(argv: list[str]) -> None:
    """`MODULE:FUNCTION CONFIG_JSON RESULT_JSON`: run the phase, write what it returns as JSON."""
    if len(argv) != 3 or argv[0].count(":") != 1:
        raise SystemExit("usage: python -m bench.harness MODULE:FUNCTION CONFIG_JSON RESULT_JSON")
    module, function = argv[0].split(":")
    Path(argv[2]).write_text(json.dumps(getattr(importlib.import_module(module), function)(json.loads(argv[1]))))


if __name__ == "__main__":
    phase_main(sys.argv[1:])
