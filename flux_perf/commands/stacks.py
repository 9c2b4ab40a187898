"""`flux-perf stacks`: the named stacks and components, and what this machine can run."""

from __future__ import annotations

from ..suite.values import named


def register(sub) -> None:
    parser = sub.add_parser("stacks", help="list named stacks and components, and what this machine can run")
    parser.add_argument("--device", type=named, default=None)
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..components import REGISTRY, Capabilities
    from ..components.stacks import NAMED_STACKS, parse_stack
    from ..model.pipeline import check_device, check_device_name, default_device

    device = args.device or default_device()
    check_device_name(device)
    check_device(device)  # as `run` does: no listing of a GPU that is not there as this machine's
    caps = Capabilities.detect(device)
    capability = f" (sm_{caps.capability[0]}{caps.capability[1]})" if caps.capability else ""
    print(f"machine: {caps.gpu_name or caps.device}{capability}")
    print("\nnamed stacks:")
    width = max(map(len, NAMED_STACKS))  # names like fast+taylorseer broke a fixed column
    for name in NAMED_STACKS:
        stack = parse_stack(name)
        reason = stack.unmet(caps)
        print(f"  {name:<{width}} {stack.describe()}")
        print(f"  {'':<{width}} {'ok' if not reason else 'skip: ' + reason}")
    optimizations = {n: c for n, c in REGISTRY.items() if not c.test_only}
    plants = {n: c for n, c in REGISTRY.items() if c.test_only}
    for title, group in (("components (lossless = expected to keep the bf16 output)", optimizations),
                         ("test-only plants (prove the gates; --flux-plant, never in a stack of their own)", plants)):
        if not group:
            continue
        print(f"\n{title}:")
        for name, cls in sorted(group.items()):
            reason = cls().unmet(caps)
            print(f"  {name:<18} {'lossless' if cls.lossless else 'lossy':<8} {cls.summary}")
            if reason:
                print(f"  {'':<18} skip: {reason}")
    return 0
