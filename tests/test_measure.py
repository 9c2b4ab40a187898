"""The timing instrument with a scripted `run`: warm-up, rounds, adaptive extension,
pytest-benchmark hand-off, and a recompile during timing."""

import itertools

import numpy as np
import pytest
import torch

from flux_perf.generate import Generation, StageTimes
from flux_perf.measure import MeasureSettings, RecompiledDuringTiming, measure, no_recompile
from flux_perf.stats import Verdict, gate, summarize


class QuietHost:
    """The scripted rounds take no real time: the real machine's CPU pressure (on a busy CI
    host, 50-70 %) must not make them `cpu-contention` and ask for rounds the script lacks."""

    def stall_fraction(self):
        return 0.0


@pytest.fixture(autouse=True)
def quiet_host_pressure(monkeypatch):
    monkeypatch.setattr("flux_perf.measure.HostPressure", QuietHost)


def scripted(walls_ms):
    walls = iter(walls_ms)
    image = np.zeros((8, 8, 3), np.uint8)

    def run():
        wall = next(walls)
        return Generation(image, StageTimes(1.0, (wall - 3.0,), 1.0, wall))

    return run


def test_warm_up_until_steady_then_time():
    run = scripted([5000, 900, 400, 401] + [400] * 5)
    timed = measure(run, MeasureSettings(rounds=5), cuda=False)
    assert timed.warmup_wall_s == [0.9, 0.4, 0.401]
    assert len(timed.rounds) == 5 and timed.wall.median == pytest.approx(0.4)
    assert timed.compile_s == pytest.approx(5.0 - 0.401, abs=0.2)
    assert timed.deterministic


def test_inconclusive_adds_rounds_up_to_the_cap():
    noisy = itertools.cycle([450, 520, 480, 550, 470, 530, 490])
    run = scripted(itertools.chain([500, 500, 500], noisy))

    def verdict(samples):
        return gate(summarize(samples), 0.5)

    timed = measure(run, MeasureSettings(rounds=3, max_rounds=9), cuda=False, verdict_of=verdict)
    assert len(timed.rounds) == 9


def test_conclusive_stops_early():
    run = scripted([500, 500, 500] + [300] * 20)
    timed = measure(run, MeasureSettings(rounds=8, max_rounds=16), cuda=False,
                    verdict_of=lambda s: gate(summarize(s), 0.5))
    assert len(timed.rounds) == 8


def test_rounds_too_few_for_the_confidence_are_inconclusive():
    # 3 rounds all under the budget: the median's interval reaches only 75 % coverage.
    assert gate(summarize([0.3, 0.31, 0.32]), 0.5) is Verdict.INCONCLUSIVE
    assert gate(summarize([0.3] * 6 + [0.31, 0.32], 0.975), 0.5, 0.975) is Verdict.PASS


class FakeBenchmark:
    disabled = False

    def __init__(self):
        self.stats, self.pedantic_rounds = self, None
        self.extra = []

    def pedantic(self, target, rounds, iterations):
        self.pedantic_rounds = rounds
        for _ in range(rounds):
            target()

    def update(self, seconds):
        self.extra.append(seconds)


def test_rounds_go_through_pytest_benchmark():
    bench = FakeBenchmark()
    run = scripted([500, 500, 500] + [450, 550] * 10)
    measure(run, MeasureSettings(rounds=4, max_rounds=8), cuda=False, benchmark=bench,
            verdict_of=lambda s: Verdict.INCONCLUSIVE)
    assert bench.pedantic_rounds == 4 and len(bench.extra) == 4


def test_a_recompile_while_timing_is_an_error():
    compiled = torch.compile(lambda x: x * 2, backend="eager", dynamic=False)
    compiled(torch.ones(2))
    with pytest.raises(RecompiledDuringTiming, match="recompiled during the timed rounds"):
        with no_recompile():
            compiled(torch.ones(3))


def test_bad_settings():
    with pytest.raises(ValueError, match="rounds=5, max_rounds=2"):
        MeasureSettings(rounds=5, max_rounds=2)


def test_cpu_pressure_marks_rounds_disturbed(tmp_path):
    """Linux PSI: tasks waiting for a CPU during the timed rounds make them `cpu-contention`,
    and a slow verdict on them `disturbed` (judges.describe_disturbance names the share)."""
    from flux_perf.host import HostPressure, cpu_stall_us
    from flux_perf.judges import describe_disturbance

    psi = tmp_path / "cpu"
    psi.write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\nfull avg10=0.00 total=0\n")
    assert cpu_stall_us(psi) == 1_000_000
    pressure = HostPressure(psi)
    psi.write_text("some avg10=50.0 avg60=0.00 avg300=0.00 total=901000000\nfull avg10=0.00 total=0\n")
    assert pressure.stall_fraction() > 1.0  # 900 s of waiting in a few microseconds: clearly contended
    assert cpu_stall_us(tmp_path / "missing") is None and HostPressure(tmp_path / "missing").stall_fraction() is None
    reasons = describe_disturbance(["cpu-contention"], [], None, None, host_stall=0.5)
    assert reasons == ["host CPU contention: runnable tasks waited for a CPU 50% of the timed rounds "
                       "(/proc/pressure/cpu)"]
