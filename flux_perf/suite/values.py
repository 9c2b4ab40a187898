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


def named(text: str) -> str:
    """An option's value that must name something: an empty one (an unset "$VAR") is argparse's
    usage error, where it read as left out and fell back to the default folder, model or device."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; give it a value, or leave the option out for "
                                         "its default")
    return text
