"""A stage-side marker: on PYTHONPATH, Python imports this at startup; in a process running a stage
script (`python stages/<name>.py`) it appends `<name>\tstart\t<wall time>\t<working directory>` to
$STAGE_MARKER_LOG, and the same with `end` when the process exits normally. A test sees which stage
commands ran at all (a stage DVC restores from its cache runs no such process), when, and in which
workspace (each queued experiment runs in one of its own)."""

import atexit
import os
import sys
import time

if os.environ.get("STAGE_MARKER_LOG") and len(sys.argv) > 0:
    _script = os.path.abspath(sys.argv[0])
    if os.path.basename(os.path.dirname(_script)) == "stages":
        _name, _log, _cwd = os.path.splitext(os.path.basename(_script))[0], os.environ["STAGE_MARKER_LOG"], os.getcwd()

        def _mark(event: str) -> None:
            with open(_log, "a") as log:
                log.write(f"{_name}\t{event}\t{time.time()!r}\t{_cwd}\n")

        _mark("start")
        atexit.register(_mark, "end")
