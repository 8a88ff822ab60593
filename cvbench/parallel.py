"""Where the classical per-image work runs: local joblib workers, or a Dask cluster.

The classical methods (dense SIFT extraction and encodings in baselines.bow and
baselines.fisher) hand their image batches to ``map_batches``. Locally that is joblib (loky
processes by default). When a Dask scheduler address is given, by ``use_scheduler(address)``
or the environment variable ``CVBENCH_SCHEDULER=tcp://host:8786``, the same batches run on the
cluster through joblib's Dask backend (``distributed`` installs with the ``dask`` extra:
``pip install 'cvbench[dask]'``). Nothing else changes: each batch is the same function on the
same images, and results come back in order, so descriptors and encodings are the same as a
local run (tests/test_parallel.py checks this on a two-worker LocalCluster).

The workers read the images, and the descriptor store, at the paths the client names: on
several machines, the data root and the cache folder must be a shared filesystem mounted at
the same path everywhere (README: "Across several machines").
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cvbench.errors import UserError

SCHEDULER_ENV = "CVBENCH_SCHEDULER"
CONNECT_TIMEOUT_S = 30  # how long to wait for the scheduler before saying it is unreachable

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def use_scheduler(address: str | None) -> None:
    """Send the classical per-image work to the Dask scheduler at `address` (``tcp://host:port``)
    from now on, in this process and the processes it starts; None or "" goes back to local
    workers. This is what ``cvbench ... --scheduler ADDRESS`` calls."""
    if address:
        os.environ[SCHEDULER_ENV] = str(address)
    else:
        os.environ.pop(SCHEDULER_ENV, None)


def scheduler_address() -> str | None:
    """The Dask scheduler the per-image work goes to, or None for local workers."""
    return os.environ.get(SCHEDULER_ENV, "").strip() or None


def dask_client(address: str):
    """A distributed.Client connected to `address`, one per address and process."""
    try:
        from distributed import Client
    except ImportError:
        raise UserError(
            f"{SCHEDULER_ENV}={address} needs the 'distributed' package "
            "(pip install 'cvbench[dask]', or unset the variable to run locally)"
        ) from None
    with _lock:
        client = _clients.get(address)
        if client is None or client.status not in ("running", "connecting", "newly-created"):
            try:
                client = Client(address, set_as_default=False, timeout=f"{CONNECT_TIMEOUT_S}s")
            except OSError as exc:
                raise UserError(f"cannot reach the Dask scheduler at {address} ({exc}); "
                                f"check the address, or unset {SCHEDULER_ENV}") from None
            _clients[address] = client
    return client


def map_batches(fn: Callable, batches: list, args: tuple = (), n_jobs: int | None = None,
                backend: str = "loky", desc: str | None = None, unit: str = "img") -> Iterator[Any]:
    """fn(batch, *args) for every batch, yielded in order.

    With a scheduler (see the module docstring) the batches run on the Dask cluster, whatever
    n_jobs and backend say; otherwise on `n_jobs` local joblib workers (None or -1: one per
    core; 1, or a single batch: in this process) of joblib backend `backend`. With `desc`, a
    progress bar (cvbench.progress) advances by len(batch) as each batch comes back."""
    if desc is None:
        yield from _map_batches(fn, batches, args, n_jobs, backend)
        return
    from cvbench import progress

    with progress.bar(sum(len(b) for b in batches), desc, unit=unit) as bar:
        for b, out in zip(batches, _map_batches(fn, batches, args, n_jobs, backend), strict=True):
            yield out
            bar.update(len(b))


def _map_batches(fn: Callable, batches: list, args: tuple, n_jobs: int | None,
                 backend: str) -> Iterator[Any]:
    from joblib import Parallel, delayed, parallel_config

    address = scheduler_address()
    tasks: Iterable = (delayed(fn)(b, *args) for b in batches)
    if address:
        client = dask_client(address)
        with parallel_config(backend="dask", client=client):
            yield from Parallel(n_jobs=-1, return_as="generator")(tasks)
        return
    n_jobs = -1 if n_jobs is None else int(n_jobs)
    if n_jobs == 1 or len(batches) <= 1:
        for b in batches:
            yield fn(b, *args)
        return
    if backend == "dask":  # a Client made by the caller (joblib's own convention)
        import distributed  # noqa: F401  (registers joblib's "dask" backend)
    yield from Parallel(n_jobs=n_jobs, backend=backend, return_as="generator")(tasks)
