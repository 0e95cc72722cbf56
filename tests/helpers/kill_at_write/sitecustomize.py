"""Kill injection for the pipeline's stage scripts (tests/test_kill_at_write.py).

On PYTHONPATH, Python imports this at startup. In a process running a stage script
(`python stages/<name>.py`), it wraps `os.replace`, the last step of every atomic write
(`transferlab.outputs`), and counts the calls:

- KILL_AT_WRITE=count: append the number of the call and its target to $KILL_LOG, kill nothing;
- KILL_AT_WRITE=<n>, KILL_SIGNAL=KILL|INT, KILL_WHEN=before|after: send the signal to this process
  just before or just after the n-th rename (before: the temporary is complete and, for a
  directory, the old one already removed; after: between one output and the next).

Every other process (DVC itself, pytest) is left alone.
"""

import os
import signal
import sys

_plan = os.environ.get("KILL_AT_WRITE")
if _plan and len(sys.argv) > 0 and os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0]))) == "stages":
    _real_replace, _calls = os.replace, [0]

    def _replace(src, dst, *args, **kwargs):
        _calls[0] += 1
        if _plan == "count":
            with open(os.environ["KILL_LOG"], "a") as log:
                log.write(f"{_calls[0]}\t{dst}\n")
            return _real_replace(src, dst, *args, **kwargs)
        hit = _calls[0] == int(_plan)
        sig = signal.SIGKILL if os.environ["KILL_SIGNAL"] == "KILL" else signal.SIGINT
        if hit and os.environ["KILL_WHEN"] == "before":
            os.kill(os.getpid(), sig)
        result = _real_replace(src, dst, *args, **kwargs)
        if hit and os.environ["KILL_WHEN"] == "after":
            os.kill(os.getpid(), sig)
        return result

    os.replace = _replace
