"""Benchmarks of the transferlab pipeline, independent of the test suite.

Each benchmark is a script, `python bench/NAME.py --source DATA` (or `python -m bench.NAME`):
  grid     the transfer grid against the course-style loop and the inference floors;
  partial  the last stages fine-tuned on cached activations, against frozen heads and the naive way;
  sweep    one sweep as the in-stage grid, sequential `dvc exp run`s and DVC's queue.
Each is a short module over the shared pieces:
  harness    project copy, timed commands, phases in child processes, common CLI, the run;
  report     tables of measured rows and targets met/MISSED, for the console or Markdown;
  reference  in-process pieces the phases share (data, bare passes, the naive loop, FLOPs).
"""
