"""One side of an interleaved A/B run: a process that imports flux-perf from its own checkout
(the orchestrator puts that checkout first on PYTHONPATH), builds and warms a case, then times
one round whenever it is asked. JSON lines in on stdin, JSON lines out on the real stdout;
everything else it prints goes to stderr.

Run as a script (`python .../ab_worker.py`), not as a module, so the orchestrator's own copy
of flux_perf is never imported by mistake.
"""

import gc
import json
import os
import sys
import traceback


def main() -> int:
    cores = os.environ.get("FLUX_PERF_AB_CORES")  # ab.CORES_VARIABLE; set by the orchestrator
    if cores:
        os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
    # The script's own folder is sys.path[0]; it holds flux_perf's modules as top-level names.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not break the protocol

    def reply(**message) -> None:
        protocol.write(json.dumps(message) + "\n")

    from flux_perf.instrument.environment import apply_guide_environment

    apply_guide_environment()
    import flux_perf
    from flux_perf.instrument.measure import MeasureSettings, no_recompile, quiet_host, warm_up
    from flux_perf.model.models import resolve_model_source
    from flux_perf.store.provenance import git_commit
    from flux_perf.instrument.runner import CaseRunner
    from flux_perf.model.scenarios import parse_scenario
    from flux_perf.components.stacks import parse_stack

    runner, case = None, None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["cmd"] == "prepare":
                if runner is None:
                    source = resolve_model_source(request.get("model"), request["device"])
                    runner = CaseRunner(source, request["device"], inject_slowdown=request.get("inject_slowdown"),
                                        log=lambda m: print(f"[{request['side']}] {m}", file=sys.stderr, flush=True))
                case = runner.case(parse_stack(request["stack"]), parse_scenario(request["scenario"]))
                first_call_s, warmup = warm_up(case.round, MeasureSettings(), runner.log)
                # Every round collects garbage before it (quiet_host); with the whole model's heap
                # frozen, that collection sees only new objects: ~0.45 s a round went to it.
                gc.collect()
                gc.freeze()
                reply(ok=True, first_call_s=first_call_s, warmup_s=warmup, stack_key=case.prepared.key,
                      fingerprint=runner.source.fingerprint(), commit=git_commit(), code=os.path.dirname(flux_perf.__file__),
                      pid=os.getpid())
            elif request["cmd"] == "round":
                with no_recompile(), quiet_host():
                    generation = case.round()
                reply(ok=True, wall_s=generation.times.wall_ms / 1000.0,
                      step_ms=sorted(generation.times.step_ms)[len(generation.times.step_ms) // 2])
            elif request["cmd"] == "quit":
                reply(ok=True)
                return 0
            else:
                reply(ok=False, error=f"unknown command {request['cmd']!r}")
        except Exception as error:  # noqa: BLE001 - reported to the orchestrator, which decides
            traceback.print_exc()
            reply(ok=False, error=f"{type(error).__name__}: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
