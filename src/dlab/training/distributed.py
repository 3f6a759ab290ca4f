"""Data-parallel training on torch.distributed: one process per device, launched by torchrun.

`dlab train RECIPE --nproc N` starts `torchrun --standalone --nproc-per-node N -m dlab train RECIPE`;
across machines run torchrun yourself with its `--nnodes`/`--rdzv-endpoint` options and the same
`-m dlab train RECIPE` (not `-m dlab.train`: that name is the `dlab.train()` function). Each
process reads RANK/WORLD_SIZE/LOCAL_RANK from torchrun's environment and:

- trains on its slice of every global batch: the batch order is the single-process order (a
  function of seed and epoch only), each rank takes `batch[rank::world]`-sized contiguous
  chunks, and DDP averages the gradients, so N processes take the same steps as one process
  with the same `data.batch_size` (the global batch);
- uses gloo on CPUs and NCCL on GPUs, with a collective timeout (`DLAB_DIST_TIMEOUT`, seconds)
  so that a stuck peer ends the job instead of hanging it; a peer that dies makes torchrun stop
  the others at once;
- leaves logs, reports and checkpoints to rank 0; a checkpoint holds the unwrapped model and
  the global position, so it resumes in any number of processes;
- continues the unfinished run of its torchrun job id (`--rdzv-id`) from its last checkpoint
  when there is one, so that a job torchrun restarts after a failure (`--max-restarts`), or the
  same command started again, resumes instead of starting over (the runs folder must be one
  that every node reads, as for `--resume`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dlab import runtime
from dlab.errors import DlabError

DEFAULT_TIMEOUT_S = 300


@dataclass(frozen=True)
class Context:
    """This process's place in a torch.distributed job."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        """Rank 0 writes the run folder."""
        return self.rank == 0


def launched() -> bool:
    """True when torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def elastic_run_id() -> str | None:
    """torchrun's id of this job (`--rdzv-id`, the same on every node and in every attempt), or
    None outside torchrun or where it is torchrun's default "none" (not an id of this job).

    The attempt number (TORCHELASTIC_RESTART_COUNT) cannot say whether this is a restart: a
    node whose own worker did not fail restarts as a membership change, and keeps 0."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID") if launched() else None
    return run_id if run_id and run_id != "none" else None


def current() -> Context | None:
    """The running job's context, or None when training in a single process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def init(device: str = "auto") -> Context | None:
    """Join the job torchrun started (idempotent); None outside one."""
    import torch.distributed as dist

    if not launched():
        return None
    if not dist.is_initialized():
        cuda = (torch.cuda.is_available() and device in ("auto", "cuda")) or device.startswith(
            "cuda"
        )
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        timeout = datetime.timedelta(
            seconds=float(os.environ.get("DLAB_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
        )
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return current()


@contextlib.contextmanager
def joined(device: str = "auto") -> Iterator[Context | None]:
    """Inside: this process's rank of the torchrun job (or None alone); leaves the process group
    afterwards if it joined it here (one the caller made stays)."""
    joining = launched() and current() is None
    context = init(device)
    try:
        yield context
    finally:
        if joining:
            shutdown()


def shutdown() -> None:
    """Leave the process group (safe to call when none exists)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(context: Context, device: torch.device) -> torch.device:
    """One GPU per process: cuda becomes cuda:LOCAL_RANK."""
    if device.type == "cuda":
        return torch.device("cuda", context.local_rank)
    return device


def broadcast_object(value: Any, context: Context | None) -> Any:
    """Rank 0's `value` on every rank (e.g. the run folder it created)."""
    if context is None:
        return value
    import torch.distributed as dist

    box = [value if context.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(context: Context | None) -> None:
    """Wait for every rank (nothing to do in a single process)."""
    if context is not None:
        import torch.distributed as dist

        dist.barrier()


def wrap(
    model: nn.Module, context: Context | None, device: torch.device, parallel: str = "ddp"
) -> nn.Module:
    """The module that runs the training forward: DDP around `model` in a job, `model` otherwise.

    With `parallel="fsdp"`, `model` itself is sharded in place (FSDP2's fully_shard on every
    Transformer block, then the root): each rank holds 1/N of the parameters, gradients and
    optimizer state, and gathers a block's weights only while it runs.
    """
    if context is None:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for unit in [m for m in model.modules() if getattr(type(m), "checkpoint_unit", False)]:
            fully_shard(unit)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _options(**kwargs: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0 (a collective for a sharded model: call on all ranks;
    the other ranks get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(cpu_offload=True))
    # a tied weight arrives once per name; keep the name safetensors keeps (the first in sorted
    # order), so the file is the one a single process writes and any process count loads
    dropped = {n for names in _tied(model).values() for n in sorted(names)[1:]}
    return {name: t.clone() for name, t in state.items() if name not in dropped}


def _tied(model: nn.Module) -> dict[int, set[str]]:
    """Every parameter's names (more than one for tied weights), by parameter identity."""
    names: dict[int, set[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), set()).add(name)
    return names


def full_optimizer_state(model: nn.Module, optimizer: Any) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, gathered on rank 0 (collective)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load whole-model weights into a sharded or a plain model (every rank passes the whole
    dict); a tied weight may come under any one of its names. Anything else missing or
    unexpected is an error."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    result = set_model_state_dict(model, dict(state), options=_options(strict=False))
    covered = {n for names in _tied(model).values() if names & state.keys() for n in names}
    missing = sorted(set(result.missing_keys) - covered)
    if missing or result.unexpected_keys:
        from dlab.errors import RunError

        raise RunError(
            f"weights do not fit the model (missing {missing[:3]}, "
            f"unexpected {sorted(result.unexpected_keys)[:3]})"
        )


def load_optimizer_state(model: nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    """Load an optimizer state saved by name (FSDP runs) or by position (single/DDP runs)."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    by_name = all(isinstance(k, str) for k in state.get("state", {}))
    if not by_name:  # positions follow the optimizer's own parameter order: name them
        names = {id(p): n for n, p in model.named_parameters()}
        order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
        state = {
            "state": {order[int(k)]: v for k, v in state["state"].items()},
            "param_groups": [
                {**g, "params": [order[int(i)] for i in g["params"]]} for g in state["param_groups"]
            ],
        }
    set_optimizer_state_dict(model, optimizer, state, options=_options())


def no_sync(train_model: nn.Module, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulated step."""
    if sync or not hasattr(train_model, "no_sync"):
        return contextlib.nullcontext()
    return train_model.no_sync()


def all_reduce(tensor: torch.Tensor, context: Context | None, op: str = "sum") -> torch.Tensor:
    """Sum (or max) `tensor` over ranks in place and return it; unchanged in a single process."""
    if context is not None:
        import torch.distributed as dist

        reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
        dist.all_reduce(tensor, op=reduce_op)
    return tensor


def take(batch: Any, rank: int, world: int) -> Any:
    """This rank's contiguous chunk of a batch: tensors, tuples, lists and dicts along dim 0."""
    if isinstance(batch, torch.Tensor):
        return batch.tensor_split(world)[rank]
    if isinstance(batch, tuple | list):
        return type(batch)(take(b, rank, world) for b in batch)
    if isinstance(batch, dict):
        return {k: take(v, rank, world) for k, v in batch.items()}
    return batch  # scalars and None travel whole


def take_all(batch: Any, parts: int) -> list[Any]:
    """A batch cut into `parts` contiguous chunks (micro-batches for gradient accumulation)."""
    return [take(batch, i, parts) for i in range(parts)]


def check_batches(num_samples: int, batch_size: int, world: int, parts: int = 1) -> None:
    """Every rank's every micro-batch needs a sample, in the last batch too."""
    last = num_samples % batch_size or batch_size
    need = world * parts
    if min(batch_size, last, num_samples) < need:
        who = f"{world} processes" if parts == 1 else f"{world} process(es) x {parts} micro-batches"
        raise DlabError(
            f"data.batch_size: {who} need at least {need} samples in every batch; batch_size "
            f"{batch_size} over {num_samples} samples leaves a last batch of {last} (choose a "
            "batch size that leaves a larger remainder, or fewer processes or micro-batches)"
        )


@dataclass(frozen=True)
class Nodes:
    """Where a job runs beyond this machine's processes: torchrun's c10d rendezvous."""

    count: int = 1
    master: str | None = None  # HOST:PORT of the rendezvous, reachable from every node
    max_restarts: int = 0
    job_id: str | None = None  # the same on every node; names the run to resume

    def check(self) -> None:
        if self.count < 1:
            raise DlabError(f"--nnodes: {self.count} machines? give 1 or more")
        if self.max_restarts < 0:
            raise DlabError(f"--max-restarts: {self.max_restarts}? give 0 or more")
        if self.count > 1 and self.master is None:
            raise DlabError(
                f"--nnodes {self.count}: name the rendezvous with --master HOST:PORT (a machine "
                "and free port every node reaches, e.g. 10.0.0.1:29500), the same on every node"
            )
        if self.master is not None:
            host, _, port = self.master.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise DlabError(
                    f"--master: give HOST:PORT, e.g. 10.0.0.1:29500, not {self.master!r}"
                )


def launch(nproc: int, argv: Sequence[str], nodes: Nodes | None = None) -> int:
    """Run `dlab <argv>` in `nproc` processes per node under torchrun; return its exit code.

    On one machine without restarts torchrun runs standalone. Otherwise its c10d rendezvous
    joins the nodes at `nodes.master` under `nodes.job_id`, and each node restarts the whole job
    up to `nodes.max_restarts` times after a failure; every rank then resumes from the last
    checkpoint. torch 2.13 shares the rendezvous store with the workers by default, and a
    restarted worker can then read a dead peer's address left from the failed round and fail
    again (2 of 3 tries here); a store per round (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1) does
    not (3 of 3)."""
    nodes = nodes or Nodes()
    if nproc < 1:
        raise DlabError(f"--nproc: {nproc} processes? give 1 or more")
    nodes.check()
    env = dict(os.environ)
    if nodes.master is None:  # this machine alone
        where = ["--standalone"]
    else:
        where = [
            f"--nnodes={nodes.count}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={nodes.master}",
            f"--rdzv-id={nodes.job_id or 'dlab'}",
        ]
    if nodes.max_restarts or nodes.master is not None:
        where.append(f"--max-restarts={nodes.max_restarts}")
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *where,
        f"--nproc-per-node={nproc}",
        "-m",
        "dlab",
        *argv,
    ]
    if "OMP_NUM_THREADS" not in env and nproc > 1:  # share the cores instead of oversubscribing
        env["OMP_NUM_THREADS"] = str(max(1, runtime.usable_cores() // nproc))
    runtime.set_wait_policy(env)
    return subprocess.call(command, env=env)
