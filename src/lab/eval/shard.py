"""Inference sharded over the processes of ``accelerate launch``: split a list by rank, gather the results back.

Under ``accelerate launch --num_processes N`` (one process per GPU, or N CPU processes over gloo) an inference
stage gives each process a contiguous block of its queries (:func:`split`, accelerate's
``PartialState.split_between_processes``: blocks of ``len // N``, the first ``len % N`` ranks one more) and puts the
per-rank results back together in the original order (:func:`gather` / :func:`gather_parts`, accelerate's
``gather_object`` = ``torch.distributed.all_gather_object``: every rank, rank 0 included, gets everything, so rank 0
writes the outputs). Results must be picklable (records, numpy arrays, dataclasses).

Outside a launch (``WORLD_SIZE`` unset or 1, no process group) nothing is imported and every function is the
identity: :func:`split` returns the items, :func:`gather` the part, :func:`gather_parts` ``[part]`` -- a single
process computes exactly what it computed before sharding existed.
"""

from __future__ import annotations

import atexit
import os
from typing import Any, Callable, Sequence, TypeVar

__all__ = ["world", "is_main", "close", "device", "bounds", "split", "gather", "gather_parts", "map_sharded", "map_array"]

T = TypeVar("T")
R = TypeVar("R")


def _distributed() -> bool:
    """True inside a multi-process launch: a process group is up, or the launcher set ``WORLD_SIZE`` > 1."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size() > 1
    except ImportError:                    # pragma: no cover - torch is a dependency
        pass
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r}: expected an int") from None


_CLOSE_REGISTERED = False             # close() registered at exit (once per process)


def _state():
    import torch
    from accelerate import PartialState     # joins the process group the launcher describes

    # without cpu=True accelerate sees no CUDA device, no MPI and calls N CPU processes "not distributed" (each
    # would take every item); cpu=True makes them MULTI_CPU over gloo
    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    state = PartialState(cpu=cpu)
    global _CLOSE_REGISTERED
    if not _CLOSE_REGISTERED:
        atexit.register(close)
        _CLOSE_REGISTERED = True
    return state


def close() -> None:
    """Tear the process group down (registered at exit by the first :func:`world` / :func:`split` / ... call).

    A gloo group still alive at interpreter exit aborts the process from its C++ destructor ("terminate called
    without an active exception", SIGABRT): 1 run in 6 of the 2-process shard test on 2 cores failed that way,
    after every collective had completed. No barrier here: a rank that crashed must not hang the others.
    """
    try:
        import torch.distributed as dist
    except ImportError:                    # pragma: no cover - torch is a dependency
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` outside a multi-process launch."""
    if not _distributed():
        return 0, 1
    s = _state()
    return s.process_index, s.num_processes


def is_main() -> bool:
    return world()[0] == 0


def device():
    """This process's device inside a launch (accelerate's ``PartialState().device``: ``cuda:<local rank>``, or the
    CPU when no CUDA device is visible), a one-process launch included (it sets no ``WORLD_SIZE``, only
    ``LAB_LAUNCHED``); ``None`` outside a launch: the caller leaves its model where it is, as before sharding."""
    from lab.train.launch import inside_launch

    if not (_distributed() or inside_launch()):
        return None
    return _state().device


def bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """``[start, end)`` of rank ``rank``'s block of ``n`` items over ``size`` processes (accelerate's split rule)."""
    per, extra = divmod(n, size)
    start = rank * per + min(rank, extra)
    return start, start + per + (1 if rank < extra else 0)


def split(items: Sequence[T]) -> list[T]:
    """This process's contiguous block of ``items`` (all of them in a single process)."""
    if not _distributed():
        return list(items)
    with _state().split_between_processes(list(items)) as mine:
        return list(mine)


def gather_parts(part: Any) -> list[Any]:
    """Every rank's ``part`` in rank order, on every rank (``[part]`` in a single process)."""
    if not _distributed():
        return [part]
    from accelerate.utils import gather_object

    return gather_object([part])            # [part] per rank: gather_object flattens one level


def gather(part: Sequence[R]) -> list[R]:
    """The concatenation, in rank order, of every rank's list ``part`` (= the original order when each rank's
    ``part`` holds the results of its :func:`split` block, in that order)."""
    if not _distributed():
        return list(part)
    return [x for p in gather_parts(list(part)) for x in p]


def map_sharded(fn: Callable[[list[T]], Sequence[R]], items: Sequence[T]) -> list[R]:
    """``fn`` (one result per input, in order) over this rank's block, results of all ranks in ``items``' order."""
    mine = split(items)
    out = list(fn(mine))
    if len(out) != len(mine):
        raise RuntimeError(f"sharded function returned {len(out)} results for {len(mine)} inputs")
    return gather(out)


def map_array(fn: Callable[[list[T]], Any], items: Sequence[T]):
    """``fn`` (``[n, ...]`` numpy rows for n inputs, e.g. an encoder's ``encode``) over this rank's block; the rows
    of all ranks concatenated in ``items``' order. One process: ``fn(list(items))`` itself."""
    parts = gather_parts(fn(split(items)))
    if len(parts) == 1:
        return parts[0]
    import numpy as np

    return np.concatenate(parts, axis=0)
