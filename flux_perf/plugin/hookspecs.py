"""Hooks a conftest.py or plugin can implement (pytest-benchmark publishes its hookspecs the same
way): add optimization components to the suite without editing the package."""

import pluggy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_flux_perf_components():
    """Return component classes to add to the suite: subclasses of
    `flux_perf.components.Component` (declare them with `register=False`), each with a `name` no
    built-in component or stack has. They join `--flux-stacks` like the built-in ones."""


def register_components(hook) -> list[str]:
    """Add the components the hook's implementations return; return their names. No
    implementation: nothing is imported (the plugin stays inert, no torch)."""
    if not hook.get_hookimpls():
        return []
    from ..components import REGISTRY, Component
    from ..components.stacks import NAMED_STACKS

    added = []
    for classes in hook():
        for cls in classes or ():
            if not (isinstance(cls, type) and issubclass(cls, Component) and isinstance(cls.__dict__.get("name"), str)):
                raise ValueError(f"pytest_flux_perf_components returned {cls!r}: expected a Component subclass "
                                 "with a name")
            if (cls.name in REGISTRY and REGISTRY[cls.name] is not cls) or cls.name in NAMED_STACKS:
                raise ValueError(f"a component or stack named {cls.name!r} exists already")
            REGISTRY[cls.name] = cls
            added.append(cls.name)
    return added


def unregister_components(names: list[str]) -> None:
    if names:
        from ..components import REGISTRY

        for name in names:
            REGISTRY.pop(name, None)
