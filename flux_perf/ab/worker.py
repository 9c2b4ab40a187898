"""One side of an interleaved A/B run: a process that imports flux-perf from its own checkout
(the orchestrator puts that checkout first on PYTHONPATH), builds and warms a case, then times
one round whenever it is asked. JSON lines in on stdin, JSON lines out on the real stdout;
everything else it prints goes to stderr.

Run as a script (`python flux_perf/ab/worker.py`), not as a module, so the orchestrator's own copy
of flux_perf is never imported by mistake.

`Worker` below is the orchestrator's end of the same JSON-lines protocol (both ends in one file,
so they change together); it runs in the orchestrator only and imports nothing of flux_perf.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

CORES_VARIABLE = "FLUX_PERF_AB_CORES"


def split_cores(available: set[int]) -> tuple[list[int], list[int]]:
    """Cores for the workers (the same ones: only one side runs at a time, so none gets
    cores the other did not) and the rest for the orchestrator and its telemetry thread."""
    cores = sorted(available)
    if len(cores) < 4:
        return cores, cores  # too few to keep apart
    workers = cores[-min(4, len(cores) // 2):]
    return workers, [c for c in cores if c not in workers]


class AbError(RuntimeError):
    """A side that cannot be started, built or timed."""


def worker_script(checkout: Path) -> Path | None:
    """The checkout's own worker script: each side runs its own code, also one from before the
    package had layer folders (the protocol of JSON lines is the same)."""
    for relative in ("flux_perf/ab/worker.py", "flux_perf/ab_worker.py"):
        if (Path(checkout) / relative).is_file():
            return Path(checkout) / relative
    return None


class Worker:
    """One side's process, as the orchestrator sees it."""

    def __init__(self, side: str, checkout: Path, log: Callable[[str], None], cores: list[int] | None = None):
        self.side = side
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")])}
        if cores:
            env[CORES_VARIABLE] = ",".join(map(str, cores))  # the worker pins itself first thing
        self.process = subprocess.Popen([sys.executable, str(worker_script(checkout))], cwd=checkout, env=env, text=True,
                                        bufsize=1, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        self.tail: list[str] = []

        def forward() -> None:  # progress of a side, live, and the last lines for errors
            for line in self.process.stderr:
                self.tail = (self.tail + [line.rstrip()])[-20:]
                if line.startswith(f"[{side}]"):
                    log(line.rstrip())

        self.forwarder = threading.Thread(target=forward, daemon=True)
        self.forwarder.start()

    def send(self, **request) -> None:
        try:
            self.process.stdin.write(json.dumps({**request, "side": self.side}) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the reply read next says the worker is gone

    def receive(self) -> dict:
        try:
            line = self.process.stdout.readline()
        except OSError:
            line = ""
        if not line:
            raise AbError(f"{self.side} worker {self.ended()}:\n" + "\n".join(self.tail[-12:]))
        reply = json.loads(line)
        if not reply.get("ok"):
            raise AbError(f"{self.side}: {reply.get('error')}")
        return reply

    def ended(self) -> str:
        """How the process ended: its output closes before it is reaped, so it is waited for (briefly)
        and its last stderr lines read, else the message said `exited (code None)` and no reason."""
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "closed its output but is still running"
        self.forwarder.join(timeout=5)
        if code < 0:
            try:
                return f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited (code {code})"

    def ask(self, **request) -> dict:
        self.send(**request)
        return self.receive()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask(cmd="quit")
            except AbError:
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def size_plant_to_round(case, warmup: list, fraction) -> dict | None:
    """A planted slow-down (the control, --*-inject-slowdown) made FRACTION of the whole warm round,
    not of its transformer steps alone, then one more warm round with it: what the A/B plants is
    what it reports. Returns the plant's report, None without a plant."""
    plant = next((c for c in case.prepared.stack.components if c.name == "slowdown"), None) if fraction else None
    if plant is None:
        return None
    plant.size_to_round(warmup[-1] * 1000.0, case.effective.steps)  # warm_up returns one call at least
    warmup.append(case.round().times.wall_ms / 1000.0)
    return plant.report()


class Side:
    """The worker's state: one runner (one model loaded at a time) and the case it times.

    Before the next case is built, the last one is dropped and the heap unfrozen: `gc.freeze()`
    (after each build, so a round's collection sees only new objects) moves the pipeline out of the
    collector's reach, and the runner frees a model's GPU memory by collecting its cycles. Frozen,
    two sides that change stacks held both models each, and the H100 ran out of memory at the
    second stack of an A/B.
    """

    def __init__(self) -> None:
        self.runner = None
        self.case = None

    def prepare(self, request: dict) -> dict:
        import flux_perf
        from flux_perf.components.stacks import parse_stack
        from flux_perf.instrument.measure import MeasureSettings, warm_up
        from flux_perf.instrument.runner import CaseRunner
        from flux_perf.model.models import resolve_model_source
        from flux_perf.model.scenarios import parse_scenario
        from flux_perf.store.provenance import git_commit

        self.case = None  # the last case holds its pipeline: let the runner release it
        gc.unfreeze()
        if self.runner is None:
            source = resolve_model_source(request.get("model"), request["device"])
            self.runner = CaseRunner(source, request["device"], inject_slowdown=request.get("inject_slowdown"),
                                     log=lambda m: print(f"[{request['side']}] {m}", file=sys.stderr, flush=True))
        case = self.runner.case(parse_stack(request["stack"]), parse_scenario(request["scenario"]))
        first_call_s, warmup = warm_up(case.round, MeasureSettings(), self.runner.log)
        plant = size_plant_to_round(case, warmup, request.get("inject_slowdown"))
        self.case = case
        # Every round collects garbage before it (quiet_host); with the whole model's heap
        # frozen, that collection sees only new objects: ~0.45 s a round went to it.
        gc.collect()
        gc.freeze()
        return dict(ok=True, first_call_s=first_call_s, warmup_s=warmup, stack_key=case.prepared.key, plant=plant,
                    fingerprint=self.runner.source.fingerprint(), commit=git_commit(),
                    code=os.path.dirname(flux_perf.__file__), pid=os.getpid())

    def round(self) -> dict:
        from flux_perf.instrument.measure import no_recompile, quiet_host

        if self.case is None:  # never the case before a failed prepare
            return dict(ok=False, error="no case to time: the last prepare failed or none was asked for")
        with no_recompile(), quiet_host():
            generation = self.case.round()
        return dict(ok=True, wall_s=generation.times.wall_ms / 1000.0,
                    step_ms=sorted(generation.times.step_ms)[len(generation.times.step_ms) // 2])


def main() -> int:
    cores = os.environ.get(CORES_VARIABLE)  # set by the orchestrator
    if cores:
        os.sched_setaffinity(0, {int(c) for c in cores.split(",")})
    # The script's own folder is sys.path[0]; it holds flux_perf's modules as top-level names.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not break the protocol

    def reply(**message) -> None:
        protocol.write(json.dumps(message) + "\n")

    from flux_perf.quiet import quiet_library_notices

    quiet_library_notices()  # before torch and the rest are imported: they log while importing
    from flux_perf.instrument.environment import apply_guide_environment

    apply_guide_environment()
    side = Side()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["cmd"] == "prepare":
                reply(**side.prepare(request))
            elif request["cmd"] == "round":
                reply(**side.round())
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
