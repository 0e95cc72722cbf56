"""Benchmarks of the transferlab pipeline, independent of the test suite.

Two command-line benchmarks, each runnable as `python bench/NAME.py` or `python -m bench.NAME`:
  grid   - the pipeline's transfer grid against the course-style loop and the inference floor;
  sweep  - one sweep of experiments as the in-stage grid, sequential `dvc exp run`s and DVC's queue.

Modules, one job each:
  project  - a temporary copy of the checkout as a git repository, and commands timed in it
             (wall time and peak RSS, measured from outside, on the copy's own code);
  phases   - what runs in a child process inside that copy: the grid's in-process approaches
             (course loop, floor, extraction, profile) and the sweep's feature-cache count;
             entry point `python -m bench.phases PHASE CONFIG_JSON RESULT_JSON`;
  report   - printing the results, with the targets as named constants;
  grid, sweep - command lines and orchestration.
"""
