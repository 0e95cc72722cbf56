"""Reading back what a run wrote for TensorBoard."""


def events(run_dir):
    """A TensorBoard run directory's events, loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator
