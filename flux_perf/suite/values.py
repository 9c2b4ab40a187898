"""Option values both front ends parse, pytest's plugin and `flux-perf`, without importing torch
(the plugin loads in every pytest run of the environment, other projects' too)."""

from __future__ import annotations

import argparse

from ..store.files import positive_number


def positive_seconds(text: str) -> float:
    """An option's value as a positive, finite number of seconds; else argparse's usage error naming it."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if not positive_number(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value
