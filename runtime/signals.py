"""How runs treat signals: SIGTERM unwinds like Ctrl-C (so journals and summaries are saved), and the few
blocks that must not be interrupted, or whose child threads must not see a terminal's Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM like SIGINT (KeyboardInterrupt) so the run unwinds and saves its journal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ctrl-C and SIGTERM are ignored in the block (in the main thread, where handlers live)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: not installed from Python, cannot be restored from it
                signal.signal(sig, handler)


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while a local cluster starts. The cluster's threads inherit the mask, and
    so do the worker processes they start, now or later to replace one that died: a terminal's Ctrl-C
    (sent to the whole process group) then reaches only this process, which stops the batch and the
    cluster, instead of every worker printing its own traceback. A Ctrl-C pressed meanwhile is delivered
    when the mask is restored."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # multiprocessing's resource tracker unblocks SIGINT in the thread that first starts it (the
    # cluster's loop thread, undoing the inherited mask): start it here first
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
