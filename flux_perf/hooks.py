"""Hooks a conftest.py or plugin can implement (pytest-benchmark publishes its hookspecs the same
way): add optimization components to the suite without editing the package."""

import pluggy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_flux_perf_components():
    """Return component classes to add to the suite: subclasses of
    `flux_perf.components.Component` (declare them with `register=False`), each with a `name` no
    built-in component or stack has. They join `--flux-stacks` like the built-in ones."""
