"""A run cut short keeps what finished. SIGTERM (a timeout, a cancelled CI job) takes the path of
Ctrl-C: both raise KeyboardInterrupt, which the commands and the plugin already turn into a report
of the finished cases marked interrupted; which signal it was is remembered for that mark.

Imports nothing heavy: the pytest plugin uses it before torch is imported.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"received": [], "deferring": False, "installed": 0}


def _handler(signum, frame) -> None:
    _state["received"].append(signum)
    if _state["deferring"]:  # the report is being written: the signal is noted, the write finishes
        print(f"flux-perf: {signal.Signals(signum).name} received, writing the report first", file=sys.stderr)
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> dict | None:
    """SIGINT and SIGTERM raise KeyboardInterrupt; returns the handlers to give back to `restore`
    (None off the main thread, where Python allows no handler). A signal the process was started
    with ignored (a background job's SIGINT, nohup) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _state["installed"] += 1
    return {number: signal.signal(number, _handler) for number in SIGNALS
            if signal.getsignal(number) is not signal.SIG_IGN}


def restore(previous: dict | None) -> None:
    if previous is None:
        return
    for number, handler in previous.items():
        signal.signal(number, handler)
    _state["installed"] -= 1
    if not _state["installed"]:
        _state["received"].clear()  # a later run in this process starts unmarked


@contextlib.contextmanager
def catching():
    """SIGTERM as Ctrl-C for the duration of the block; the handlers before it come back after."""
    previous = install()
    try:
        yield
    finally:
        restore(previous)


@contextlib.contextmanager
def deferred():
    """Signals arriving during the block are noted, not raised: the final report is written whole."""
    before = _state["deferring"]
    _state["deferring"] = True
    try:
        yield
    finally:
        _state["deferring"] = before


def received() -> str | None:
    """The name of the first signal caught since the handlers were installed, if any."""
    return signal.Signals(_state["received"][0]).name if _state["received"] else None


def describe(error: BaseException | None = None) -> str:
    """What stopped the run: the signal, else the exception's type (a KeyboardInterrupt raised in code)."""
    return received() or (type(error).__name__ if error is not None else "KeyboardInterrupt")


def exit_status() -> int:
    """128 + the signal's number, as a shell reports a process its signal ended (130 for Ctrl-C)."""
    return 128 + int(_state["received"][0] if _state["received"] else signal.SIGINT)
