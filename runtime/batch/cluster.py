"""The Dask side of a batch: a local cluster sized to the cores (or an existing scheduler), and stopping
it quietly when a batch is interrupted under running scenes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from runtime.batch.summary import one_line
from runtime.cpus import usable_cores
from runtime.signals import sigint_blocked
from stars_edge.errors import ConfigError

#: Seconds to wait for a first worker on an existing scheduler before giving up.
WORKER_WAIT_SECONDS = 60.0


def local_cluster_size(workers: int | None, threads_per_worker: int | None) -> tuple[int, int]:
    """Worker processes x task threads for a local cluster: by default one task thread per process and a
    process per two cores, since each scene keeps two busy (its reader thread decodes and warps while the
    engine runs); ONNX Runtime then gets the cores left per task (``onnx_threads``)."""
    threads_per_worker = threads_per_worker or 1
    if workers is None:
        workers = max(1, usable_cores() // (2 * threads_per_worker))
    return workers, threads_per_worker


def stop_cluster(client: Any, cluster: Any, scheduler: Any, quiet: bool) -> None:
    """Close our client and local cluster. ``quiet``: the batch was interrupted with scenes still running, so
    the local workers' complaints while the cluster goes away under them (lost heartbeats, closed comms)
    are silenced: the summary and the one-line report say what happened."""
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    if quiet and cluster is not None and client is not None:
        with contextlib.suppress(Exception):
            client.run(quiet_logs)
    if quiet:
        quiet_logs()
    try:
        if client is not None and client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class _InterruptedSync(logging.Filter):
    """Drops tornado's report of the cancel callback that Dask's ``sync`` leaves when Ctrl-C interrupts
    the main thread: the loop thread logs it, racing the main thread's handling of the interrupt."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "sync.<locals>.cancel" not in record.getMessage()


@contextlib.contextmanager
def interrupted_sync_not_logged() -> Iterator[None]:
    logger = logging.getLogger("tornado.application")
    quiet = _InterruptedSync()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


#: Loggers that complain while a cluster is stopped under running work: Dask's, and tornado's event loop
#: (an interrupted ``client.sync`` leaves a cancelled callback it logs as an error).
NOISY_LOGGERS = ("distributed", "tornado")


def quiet_logs() -> None:
    """Only critical messages from Dask and tornado in this process (a worker of a stopping cluster)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def connect(
    distributed: Any,
    scheduler: Any,
    workers: int | None,
    threads_per_worker: int | None,
    dashboard_address: str | None,
) -> tuple[Any, Any, str | None]:
    """``(client, local cluster or None, dashboard link or None)``."""
    if isinstance(scheduler, distributed.Client):
        return scheduler, None, None
    if scheduler is not None:
        try:
            client = distributed.Client(str(scheduler), set_as_default=False, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"cannot reach the Dask scheduler at {scheduler} ({one_line(exc)}); start it with "
                "`dask scheduler` or drop --scheduler for a local cluster"
            ) from exc
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_SECONDS)
        except TimeoutError as exc:
            client.close()
            raise ConfigError(
                f"no Dask worker joined {scheduler} within {WORKER_WAIT_SECONDS:.0f} s; start some with "
                f"`dask worker {scheduler}`"
            ) from exc
        return client, None, None
    count, per_worker = local_cluster_size(workers, threads_per_worker)
    cluster = None
    try:
        with sigint_blocked():
            cluster = distributed.LocalCluster(
                n_workers=count,
                threads_per_worker=per_worker,
                processes=True,
                # None would still bind the scheduler's HTTP server to the default :8787; a free port
                # never clashes
                dashboard_address=":0" if dashboard_address is None else dashboard_address,
                silence_logs=logging.ERROR,
            )
        dashboard = cluster.dashboard_link if dashboard_address is not None else None
        return distributed.Client(cluster, set_as_default=False), cluster, dashboard
    except BaseException:  # e.g. a Ctrl-C pressed while the cluster started, delivered on unblocking
        if cluster is not None:
            cluster.close()
        raise
