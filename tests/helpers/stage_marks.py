"""Reading the stage marker's log (`helpers/stage_marker/sitecustomize.py`)."""

import os
from pathlib import Path

MARKER = Path(__file__).parent / "stage_marker"


def marker_env(log: Path) -> dict[str, str]:
    """The environment that puts the marker in every stage process, logging to `log`."""
    return {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(MARKER), os.environ.get("PYTHONPATH")])),
        "STAGE_MARKER_LOG": str(log),
    }


def marks(log: Path) -> list[tuple[str, str, float, str]]:
    """(stage, "start" | "end", wall time, working directory) for each mark, in order."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [(stage, event, float(when), cwd) for stage, event, when, cwd in (line.split("\t") for line in lines)]


def stages_started(log: Path) -> list[str]:
    return [stage for stage, event, _, _ in marks(log) if event == "start"]


def intervals_by_workspace(log: Path) -> dict[str, tuple[float, float]]:
    """Working directory -> (first stage start, last stage end) of the stages that ran there."""
    spans: dict[str, list[float]] = {}
    for _, _, when, cwd in marks(log):
        spans.setdefault(cwd, []).append(when)
    return {cwd: (min(times), max(times)) for cwd, times in spans.items()}
