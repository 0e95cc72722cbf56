"""Entry points (stages, `transferlab predict`): user-facing errors as one clear line on stderr and
a non-zero exit (tracebacks only on request), and a quicker start."""

import contextlib
import gc
import os
import sys
from collections.abc import Callable

from transferlab.errors import UserError

DEBUG_ENV = "TRANSFERLAB_DEBUG"


@contextlib.contextmanager
def imports_without_gc():
    """Pause the garbage collector while an entry point imports its libraries, then freeze every
    object alive (at a process's start: what the imports made) out of later collections.

    Importing torch makes hundreds of thousands of long-lived objects (more with the torch._dynamo
    that torch.optim imports later). Collections during the imports free nothing, and every later
    full collection would rescan them all (what that saves: BENCHMARKS.md).
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def run_cli(main: Callable[[], object]) -> None:
    """Run an entry point; turn UserError and Ctrl-C into one line and an exit code.

    Set TRANSFERLAB_DEBUG=1 to get the full traceback instead. After success, with every output
    written and closed, the garbage collector is frozen, so the interpreter's final collections skip
    what the entry point made since its imports (which `imports_without_gc` froze already); they
    free nothing that matters.
    """
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        main()
    except UserError as err:
        if debug:
            raise
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        if debug:
            raise
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    gc.freeze()
