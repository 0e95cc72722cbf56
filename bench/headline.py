"""Benchmark: the README's headline on real CIFAR-10, as mean ± std over seeds.

For each of --seeds, in one project copy, `dvc repro` of params.yaml with `seed` set to it (which
draws the subsets and initialises TinyVGG), data.source --source, and the transfer grid cut to
--models x --train-sizes x --epochs with the last --stages stages trained (0: the frozen head).
Each model's test accuracy comes from that run's reports/evaluation.json (the 2,000-image test
subset of that seed, scored once); reported per seed and as mean ± sample std over the seeds.

  python bench/headline.py --source ../shared/data/cifar10-jpg.tar.gz     # BENCHMARKS.md's run
"""

import json
import sys
from pathlib import Path

import yaml

if not __package__:  # run as `python bench/headline.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import harness
from bench.report import Table
from transferlab.stats import mean_std


def arguments(parser) -> None:
    parser.set_defaults(models=["effnet_lite0"], train_sizes=[500], epochs=[5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 0, 1], help="params.yaml's seed, one run each")
    parser.add_argument("--stages", nargs="+", type=int, default=[0, 1], help="trainable_stages")


def params(args, seed: int | None = None) -> dict:
    """params.yaml at `seed` with the command line's source and grid; everything else its own."""
    params = yaml.safe_load((harness.ROOT / "params.yaml").read_text())
    params["data"]["source"] = str(Path(args.source).resolve())
    params["seed"] = args.seeds[0] if seed is None else seed
    params.update(model=args.models, train_size=args.train_sizes, epochs=args.epochs, trainable_stages=args.stages)
    params["subset"]["test_size"] = args.test_size
    return params


def run(project: harness.Project, args) -> dict:
    runs = {}
    for seed in args.seeds:
        print(f"seed {seed}: dvc repro ...", flush=True)
        project.write_params(params(args, seed))
        timing = project.measure(["dvc", "repro"], project.cache("headline"))
        evaluation = json.loads((project.path / "reports/evaluation.json").read_text())
        accuracy = {name: result["test_acc"] for name, result in evaluation.items()}
        runs[str(seed)] = {"wall_s": timing["wall_s"], "test_acc": accuracy}
    return {"runs": runs}


def report(r: dict) -> list[Table]:
    seeds = list(r["runs"])
    models = sorted(r["runs"][seeds[0]]["test_acc"], key=lambda name: (name != "tinyvgg", name))
    rows = []
    for model in models:
        accuracies = [100 * r["runs"][seed]["test_acc"][model] for seed in seeds]
        mean, std = mean_std(accuracies)
        rows.append((model, *accuracies, f"{mean:.2f} ± {std:.2f}"))
    columns = {"model": "", **{f"seed {seed}, %": ".2f" for seed in seeds}, "mean ± std, %": ""}
    walls = ", ".join(f"seed {seed} {r['runs'][seed]['wall_s']:.0f} s" for seed in seeds)
    return [Table("test accuracy on each seed's 2,000-image test subset", columns, rows, [f"dvc repro: {walls}"])]


if __name__ == "__main__":
    harness.main(sys.modules[__name__])
