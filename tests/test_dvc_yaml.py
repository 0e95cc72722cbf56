"""dvc.yaml is checked, never trusted.

- Code: for every stage whose `cmd` runs `stages/<name>.py`, the `src/transferlab/*.py` entries of
  its `deps` must equal the transferlab modules the script imports, transitively (so that editing
  any code a stage runs makes `dvc repro` rerun it, and editing code it doesn't run doesn't).
  Static `ast` parsing only.
- Paths: each stage's `cmd` must parse as its script's paths object (`transferlab.paths`), and what
  the object says the stage reads must be among its deps, what it writes exactly its outs, metrics
  and plots.
"""

import ast
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = ROOT / "dvc.yaml"
PACKAGE = "transferlab"
PACKAGE_DIR = ROOT / "src" / PACKAGE
NOT_DEPS = {"__init__", "__main__"}  # package plumbing, never a stage dependency
SCRIPT = re.compile(r"\bstages/\w+\.py\b")


def imported_modules(source: str, package_dir: Path, in_package: bool = False) -> set[str]:
    """Names of `package_dir`'s modules that `source` imports directly, anywhere in it
    (function-local imports included, since those run too). `from transferlab import X` counts X
    only when it is a module file, not a name re-exported by `__init__`; relative imports count
    only inside the package (`in_package`)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(_submodule(alias.name.split(".")) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level and not in_package:
                continue
            parts = ([PACKAGE] if node.level else []) + (node.module or "").split(".")
            parts = [part for part in parts if part]
            found.add(_submodule(parts))
            if parts == [PACKAGE]:
                found.update(alias.name for alias in node.names)
    return {name for name in found if name and (package_dir / f"{name}.py").is_file()}


def _submodule(parts: list[str]) -> str | None:
    """`x` for a dotted name `transferlab.x[...]`, else None (not one of the package's modules)."""
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def import_closure(script: Path, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """Every module of the package that running `script` imports, following imports inside the
    package recursively; minus `__init__`/`__main__`, which are not stage deps."""
    seen: set[str] = set()
    todo = imported_modules(script.read_text(), package_dir)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo |= imported_modules((package_dir / f"{name}.py").read_text(), package_dir, True)
    return seen - NOT_DEPS


def code_drift(stage_name: str, stage: dict, root: Path = ROOT) -> list[str]:
    """Problems with one stage's code deps, as messages naming the stage: its script not a dep,
    modules imported but not deps (missing), module deps not imported (extra). Empty: no drift."""
    script = SCRIPT.search(stage["cmd"]).group(0)
    deps = set(stage.get("deps", []))
    listed = {Path(dep).stem for dep in deps if re.fullmatch(rf"src/{PACKAGE}/\w+\.py", dep)}
    imported = import_closure(root / script, root / "src" / PACKAGE)
    problems = [f"stage {stage_name!r}: script {script} is not in its deps"] if script not in deps else []
    problems += [
        f"stage {stage_name!r}: missing dep src/{PACKAGE}/{name}.py (imported, not listed)"
        for name in sorted(imported - listed)
    ]
    problems += [
        f"stage {stage_name!r}: extra dep src/{PACKAGE}/{name}.py (listed, not imported)"
        for name in sorted(listed - imported)
    ]
    return problems


def script_stages() -> dict[str, dict]:
    """dvc.yaml's stages whose `cmd` runs a `stages/<name>.py` script, by stage name."""
    stages = yaml.safe_load(DVC_YAML.read_text())["stages"]
    return {name: stage for name, stage in stages.items() if SCRIPT.search(stage.get("cmd", ""))}


STAGES = script_stages()


def test_dvc_yaml_has_script_stages():
    """Guard: an empty parametrization would pass vacuously."""
    assert STAGES


@pytest.mark.parametrize("stage_name", sorted(STAGES))
def test_stage_code_deps_match_imports(stage_name):
    problems = code_drift(stage_name, STAGES[stage_name])
    assert not problems, "dvc.yaml code deps drifted:\n" + "\n".join(problems)


# --- the checker itself catches drift ------------------------------------------------------------


def write_package(root: Path, modules: dict[str, str], script: str) -> Path:
    """A synthetic repo under `root`: src/transferlab/<name>.py per `modules`, and
    stages/run.py holding `script`; returns `root`."""
    package_dir = root / "src" / PACKAGE
    package_dir.mkdir(parents=True)
    for name, source in modules.items():
        (package_dir / f"{name}.py").write_text(source)
    (root / "stages").mkdir()
    (root / "stages" / "run.py").write_text(script)
    return root


def test_import_closure_follows_every_import_form(tmp_path):
    root = write_package(
        tmp_path,
        {
            "__init__": "from transferlab.a import thing\n",
            "__main__": "from transferlab import a\n",
            "a": "from transferlab.b import x\n",
            "b": "def f():\n    import transferlab.c\n",  # function-local, `import` form
            "c": "from . import d\n",  # relative, inside the package
            "d": "import os\n",
            "e": "",  # never imported
            "f": "",  # only via a re-exported name below
        },
        "from transferlab import a, thing\nimport transferlab\nfrom transferlab.f import *\n",
    )
    assert import_closure(root / "stages" / "run.py", root / "src" / PACKAGE) == {"a", "b", "c", "d", "f"}


def test_code_drift_reports_missing_extra_and_script(tmp_path):
    root = write_package(
        tmp_path, {"a": "from transferlab import b\n", "b": "", "c": ""}, "from transferlab import a\n"
    )
    stage = {"cmd": "python stages/run.py out", "deps": ["src/transferlab/a.py", "src/transferlab/c.py", "data/in"]}
    assert code_drift("s", stage, root) == [
        "stage 's': script stages/run.py is not in its deps",
        "stage 's': missing dep src/transferlab/b.py (imported, not listed)",
        "stage 's': extra dep src/transferlab/c.py (listed, not imported)",
    ]
    stage["deps"] = ["stages/run.py", "src/transferlab/a.py", "src/transferlab/b.py", "data/in"]
    assert code_drift("s", stage, root) == []


@pytest.mark.parametrize("stage_name", sorted(STAGES))
def test_code_drift_catches_a_real_stage_losing_a_dep(stage_name):
    stage = STAGES[stage_name]
    script = SCRIPT.search(stage["cmd"]).group(0)
    module = f"src/{PACKAGE}/{sorted(import_closure(ROOT / script))[0]}.py"
    pruned = {**stage, "deps": [dep for dep in stage.get("deps", []) if dep != module]}
    message = f"stage {stage_name!r}: missing dep {module} (imported, not listed)"
    assert message in code_drift(stage_name, pruned)


# --- each stage's cmd against its script's paths object -------------------------------------------


def stage_paths_type(script: Path) -> type:
    """The paths type a stage script parses its arguments into (its module's `PATHS`)."""
    spec = importlib.util.spec_from_file_location(f"stage_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PATHS


def within(path: str, folder: str) -> bool:
    """`path` is `folder` or inside it (a stage may name a folder whose files dvc.yaml lists)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def from_params(dep: str, stage: dict) -> bool:
    """Whether `dep` is a path a param of the stage names (`${data.source}`), read from params.yaml,
    not from the cmd."""
    return dep.startswith("${") and dep[2:].split(".")[0] in stage.get("params", [])


def path_drift(stage_name: str, stage: dict) -> list[str]:
    """Problems between a stage's `cmd` and its deps/outs, as messages naming the stage: what its
    paths object reads must be deps, what it writes must be declared in the right section."""
    from transferlab import paths

    args = shlex.split(stage["cmd"])
    parsed = paths.parse(stage_paths_type(ROOT / args[1]), "", args[2:])
    reads = [str(path) for path in paths.reading(parsed)]
    data_deps = [dep for dep in stage.get("deps", []) if not dep.endswith(".py") and not from_params(dep, stage)]
    problems = [
        f"stage {stage_name!r}: reads {path}, which is not a dep"
        for path in reads
        if not any(within(dep, path) for dep in data_deps)
    ]
    problems += [
        f"stage {stage_name!r}: dep {dep} is not among what its cmd reads"
        for dep in data_deps
        if not any(within(dep, path) for path in reads)
    ]
    for section, written in paths.writing(parsed).items():
        written = [str(path) for path in written]
        declared = [next(iter(entry)) if isinstance(entry, dict) else entry for entry in stage.get(section, [])]
        problems += [
            f"stage {stage_name!r}: writes {path}, which is not in its {section}"
            for path in written
            if not any(within(out, path) for out in declared)
        ]
        problems += [
            f"stage {stage_name!r}: {section} lists {out}, which its cmd does not write there"
            for out in declared
            if not any(within(out, path) for path in written)
        ]
    return problems


@pytest.mark.parametrize("stage_name", sorted(STAGES))
def test_stage_cmd_matches_its_paths_and_outputs(stage_name):
    problems = path_drift(stage_name, STAGES[stage_name])
    assert not problems, "dvc.yaml cmd and deps/outs disagree:\n" + "\n".join(problems)


def test_path_drift_reports_swapped_and_undeclared_paths():
    stage = dict(STAGES["train_tinyvgg"])
    swapped = stage["cmd"].replace("reports/tinyvgg.json plots/tinyvgg", "plots/tinyvgg reports/tinyvgg.json")
    assert path_drift("t", {**stage, "cmd": swapped}) == [
        "stage 't': writes plots/tinyvgg, which is not in its outs",
        "stage 't': outs lists reports/tinyvgg.json, which its cmd does not write there",
        "stage 't': writes reports/tinyvgg.json, which is not in its plots",
        "stage 't': plots lists plots/tinyvgg/loss.json, which its cmd does not write there",
        "stage 't': plots lists plots/tinyvgg/accuracy.json, which its cmd does not write there",
    ]
    undeclared = {**stage, "outs": [out for out in stage["outs"] if out != "runs/tinyvgg"]}
    assert path_drift("t", undeclared) == ["stage 't': writes runs/tinyvgg, which is not in its outs"]
    no_input = {**stage, "cmd": stage["cmd"].replace("data/subsets ", "data/elsewhere ")}
    assert "stage 't': reads data/elsewhere, which is not a dep" in path_drift("t", no_input)
