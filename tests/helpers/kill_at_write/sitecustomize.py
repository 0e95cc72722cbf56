"""Kill injection for the pipeline's stage scripts (tests/test_kill_at_write.py).

On PYTHONPATH, Python imports this at startup. In a process running a stage script
(`python stages/<name>.py`), it wraps `os.replace`, the last step of every atomic write
(`transferlab.outputs`), and counts the calls. Each target is named by a key independent of where
the project and the cache lie: `cache:<path relative to $TRANSFERLAB_CACHE_DIR>` for a machine-cache
entry, `project:<path relative to the working directory>` (DVC runs stages in the project) else.

- KILL_AT_WRITE=count: kill nothing;
- KILL_AT_WRITE=<n>: kill at the n-th rename;
- KILL_AT_WRITE=match:<regex>: kill at the first rename whose key matches `regex` (re.search);
- KILL_SIGNAL=KILL|INT, KILL_WHEN=before|after: the signal sent to this process, just before the
  rename (the temporary is complete and, for a directory, the old one already removed) or just
  after it (between one write and the next).

With $KILL_LOG set, every completed rename appends `<stage>\t<n>\t<key>\t<target>` to it, and
the rename killed at appends `KILLED\t<n>\t<key>\t<target>` just before the signal (a rename
killed before is not completed, one killed after is logged as completed first).

Every other process (DVC itself, pytest) is left alone.
"""

import os
import re
import signal
import sys

_plan = os.environ.get("KILL_AT_WRITE")
if _plan and len(sys.argv) > 0 and os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0]))) == "stages":
    _real_replace, _calls = os.replace, [0]
    _stage = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    _cache = os.path.abspath(os.environ.get("TRANSFERLAB_CACHE_DIR") or os.devnull)

    def _key(dst) -> str:
        path = os.path.abspath(os.fsdecode(dst))
        if path.startswith(_cache + os.sep):
            return "cache:" + os.path.relpath(path, _cache)
        return "project:" + os.path.relpath(path)

    def _log(tag: str, dst) -> None:
        if os.environ.get("KILL_LOG"):
            with open(os.environ["KILL_LOG"], "a") as log:
                log.write(f"{tag}\t{_calls[0]}\t{_key(dst)}\t{os.fsdecode(dst)}\n")

    def _hit(dst) -> bool:
        if _plan == "count":
            return False
        if _plan.startswith("match:"):
            return re.search(_plan[len("match:") :], _key(dst)) is not None
        return _calls[0] == int(_plan)

    def _replace(src, dst, *args, **kwargs):
        global _plan
        _calls[0] += 1
        hit = _hit(dst)
        if hit:
            _plan = "count"  # once: a `match:` plan kills at the first matching write only
            sig = signal.SIGKILL if os.environ["KILL_SIGNAL"] == "KILL" else signal.SIGINT
        if hit and os.environ["KILL_WHEN"] == "before":
            _log("KILLED", dst)
            os.kill(os.getpid(), sig)
        result = _real_replace(src, dst, *args, **kwargs)
        _log(_stage, dst)
        if hit and os.environ["KILL_WHEN"] == "after":
            _log("KILLED", dst)
            os.kill(os.getpid(), sig)
        return result

    os.replace = _replace
