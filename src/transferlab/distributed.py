"""N processes train one model: torch.distributed, started by torch's elastic launcher.

`processes: N` in params.yaml (default 1). With N > 1 a training stage hands the training loop to
N worker processes started by `torch.distributed.launcher` (torchrun's machinery, with a c10d
rendezvous on localhost, as `torchrun --standalone`) and waits for them. Gloo connects them on the
CPU; on CUDA, NCCL, and worker r uses GPU r.

- Every worker draws the same seeded global batches, in the one-process order, and takes its
  contiguous part of each (`Group.part`). Each part's mean loss is weighted by its share of the
  global batch and the gradients are summed across workers (`Group.sum_gradients`), so every step
  is the one-process step up to summation order: TinyVGG's weights match a one-process run's. With
  BatchNorm or dropout each worker normalises and drops out its own part, so results can depend
  on N: it is a param, and DVC sees it.
- Per-epoch loss and accuracy are sums over all workers (`Group.sum`).
- Worker 0 alone writes during training (training states, TensorBoard's epochs); the stage's own
  process writes the outputs once the workers are done.
- A worker that fails or is killed stops the others; the stage reports one line naming it.
"""

import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from transferlab.entrypoints import DEBUG_ENV
from transferlab.errors import UserError


@dataclass(frozen=True)
class Group:
    """This process's place among the processes training one model."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def leader(self) -> bool:
        """The one process that writes."""
        return self.rank == 0

    def part(self, batch_len: int) -> slice:
        """This process's contiguous part of a global batch (parts differ by at most one sample)."""
        base, extra = divmod(batch_len, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, values: list[float]) -> list[float]:
        """`values` summed over every process."""
        if self.size == 1:
            return values
        totals = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)
        return totals.tolist()

    def sum_gradients(self, model: nn.Module) -> None:
        """Sum the trainable parameters' gradients over every process, in one collective (a
        process whose part of a batch was empty contributes zeros)."""
        if self.size == 1:
            return
        parameters = [p for p in model.parameters() if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in parameters])
        dist.all_reduce(flat)
        for parameter, grad in zip(parameters, flat.split([p.numel() for p in parameters]), strict=True):
            parameter.grad = grad.view_as(parameter)


ONE_PROCESS = Group()


def launch(processes: int, device: torch.device, work: Callable, *args) -> list:
    """Run `work(group, *args)` in `processes` workers; their return values, by rank. `device` is
    the stage's: on CUDA, worker r gets GPU r (`group.device`). The workers receive `args`'
    tensors in one shared memory (torch.multiprocessing): a worker copies what it changes."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone
        run_id=str(uuid.uuid4()),
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        with _launcher_quiet():
            results = elastic_launch(config, _worker)(device.type, work, *args)
    except SignalException:  # the launcher's form of Ctrl-C (or a SIGTERM): it stopped the workers
        raise KeyboardInterrupt from None
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        raise UserError(f"process {rank} of {processes} failed: {_failure_line(failure)}") from None
    return [results[rank] for rank in range(processes)]


def _worker(device_type: str, work: Callable, *args):
    """One worker: join the process group, run `work`, leave the group. Ctrl-C reaches every
    process of the terminal's group: the launcher stops the workers, which ignore it themselves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cuda = device_type == "cuda"
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    group = Group(dist.get_rank(), dist.get_world_size(), device)
    if not cuda:  # the workers share the CPU's cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // group.size))
    try:
        return work(group, *args)
    finally:
        dist.destroy_process_group()


def _failure_line(failure) -> str:
    """A worker's error as one line: its exception's message, or the signal that killed it."""
    message = failure.message.get("message") if isinstance(failure.message, dict) else failure.message
    line = " ".join(str(message or f"exit code {failure.exitcode}").split())
    return line.removeprefix(f"{UserError.__name__}: ")


@contextlib.contextmanager
def _launcher_quiet():
    """The launcher logs every worker failure with its traceback, and each step of a shutdown;
    the one-line error says what matters (the logs stay available with TRANSFERLAB_DEBUG=1).
    Only the launcher logs in this process meanwhile: the workers are other processes."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        yield
        return
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
