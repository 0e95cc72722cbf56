"""A stage-side marker: on PYTHONPATH, Python imports this at startup; in a process running a stage
script (`python stages/<name>.py`) it appends `<name>` to $STAGE_MARKER_LOG, so a test can see which
stage commands ran at all (a stage restored by DVC from its cache runs no such process)."""

import os
import sys

if os.environ.get("STAGE_MARKER_LOG") and len(sys.argv) > 0:
    script = os.path.abspath(sys.argv[0])
    if os.path.basename(os.path.dirname(script)) == "stages":
        with open(os.environ["STAGE_MARKER_LOG"], "a") as log:
            log.write(os.path.splitext(os.path.basename(script))[0] + "\n")
