"""The timing instrument with a scripted `run`: warm-up, rounds, rounds doubled while the verdict
is undecided (within the round and time caps), pytest-benchmark hand-off, a recompile during timing."""

import itertools
import time

import numpy as np
import pytest
import torch

from flux_perf.model.generate import Generation, StageTimes
from flux_perf.instrument.measure import MeasureSettings, RecompiledDuringTiming, measure, no_recompile
from flux_perf.gate.budgets import LatencyBudget
from flux_perf.gate.latency import Verdict, check_budget, decided
from flux_perf.instrument.rounds import summarize


class QuietHost:
    """The scripted rounds take no real time: the real machine's CPU pressure (on a busy CI
    host, 50-70 %) must not make them `cpu-contention` and ask for rounds the script lacks."""

    def stall_fraction(self):
        return 0.0

    def steal_fraction(self):
        return 0.0


@pytest.fixture(autouse=True)
def quiet_host_pressure(monkeypatch):
    monkeypatch.setattr("flux_perf.instrument.measure.HostPressure", QuietHost)


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


def test_under_torchrun_every_rank_warms_up_as_long_as_rank_zero(monkeypatch):
    """A rank steady after two calls keeps warming up while rank 0 is not: the calls run
    collectives, and ranks that stopped apart would wait on each other for ever."""
    rank_zero_steady = [False, False, False, True]  # rank 0's answer after each of this rank's warm-up calls
    asked = []

    def from_main(value):
        asked.append(value)
        return rank_zero_steady[len(asked) - 1] if len(asked) <= len(rank_zero_steady) else value

    monkeypatch.setattr("flux_perf.instrument.distributed.from_main", from_main)
    timed = measure(scripted([5000] + [400] * 9), MeasureSettings(rounds=5), cuda=False)
    assert asked[:2] == [False, True], "this rank was steady after its second call"
    assert timed.warmup_wall_s == [0.4] * 4, "it warmed up as long as rank 0 did"


BUDGET = LatencyBudget(0.5, "absolute", "budgets.toml")


def test_undecided_rounds_double_up_to_the_cap():
    noisy = itertools.cycle([450, 520, 480, 550, 470, 530, 490])
    run = scripted(itertools.chain([500, 500, 500], noisy))
    settings = MeasureSettings(rounds=3, max_rounds=10)
    assert settings.look_sizes == (3, 6, 10) and settings.looks == 3
    timed = measure(run, settings, cuda=False, decided=lambda s: decided(s, [BUDGET], settings.looks))
    assert len(timed.rounds) == 10 and timed.stopped == "undecided at the cap of 10 rounds"


def test_the_time_cap_stops_an_undecided_case():
    noisy = itertools.cycle([4500, 5200, 4800, 5500])  # 5 s rounds straddling a 5 s budget
    run = scripted(itertools.chain([5000, 5000, 5000], noisy))
    settings = MeasureSettings(rounds=4, max_rounds=32, max_case_seconds=50)
    timed = measure(run, settings, cuda=False,
                    decided=lambda s: decided(s, [LatencyBudget(5.0, "absolute", "x")], settings.looks))
    assert len(timed.rounds) == 8, "4, then 4 more (40 s); 8 more would pass the 50 s cap"
    assert "8 more would pass the case's 50 s cap" in timed.stopped


def test_a_decided_case_stops_at_the_first_look():
    run = scripted([500, 500, 500] + [300] * 20)
    settings = MeasureSettings(rounds=8, max_rounds=16)
    timed = measure(run, settings, cuda=False, decided=lambda s: decided(s, [BUDGET], settings.looks))
    assert len(timed.rounds) == 8 and timed.stopped == "decided after 8 rounds"


def test_rounds_too_few_for_the_confidence_are_inconclusive():
    # 3 rounds all under the budget: the median's interval reaches only 75 % coverage.
    assert check_budget([0.3, 0.31, 0.32], BUDGET, 0.95).verdict is Verdict.INCONCLUSIVE
    assert check_budget([0.3] * 6 + [0.31, 0.32], BUDGET, 0.975).verdict is Verdict.PASS
    assert summarize([0.3] * 6 + [0.31, 0.32], 0.975).ci_level >= 0.975


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
    measure(run, MeasureSettings(rounds=4, max_rounds=8), cuda=False, benchmark=bench, decided=lambda s: False)
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
    with pytest.raises(ValueError, match="max_case_seconds=0"):
        MeasureSettings(max_case_seconds=0)
    for interval in (0, -1, float("nan"), "abc"):
        with pytest.raises(ValueError, match=f"telemetry_interval_s={interval!r}: must be a positive number"):
            MeasureSettings(telemetry_interval_s=interval)


def test_cpu_pressure_marks_rounds_disturbed(tmp_path):
    """Linux PSI: tasks waiting for a CPU during the timed rounds make them `cpu-contention`,
    and a slow verdict on them `disturbed` (judges.describe_disturbance names the share)."""
    from flux_perf.instrument.host import HostPressure, cpu_stall_us
    from flux_perf.gate.latency import describe_disturbance
    from flux_perf.instrument.telemetry import Flag

    psi = tmp_path / "cpu"
    psi.write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\nfull avg10=0.00 total=0\n")
    assert cpu_stall_us(psi) == 1_000_000
    pressure = HostPressure(psi)
    psi.write_text("some avg10=50.0 avg60=0.00 avg300=0.00 total=901000000\nfull avg10=0.00 total=0\n")
    assert pressure.stall_fraction() > 1.0  # 900 s of waiting in a few microseconds: clearly contended
    assert cpu_stall_us(tmp_path / "missing") is None and HostPressure(tmp_path / "missing").stall_fraction() is None
    reasons = describe_disturbance([Flag.CPU_CONTENTION], [], None, None, host_stall=0.5)
    assert reasons == ["host CPU contention: runnable tasks waited for a CPU 50% of the timed rounds "
                       "(/proc/pressure/cpu)"]


def proc_stat(user, system, idle, steal, guest=0):
    """/proc/stat as Linux writes it: the aggregate line, one CPU's line, then other counters."""
    ticks = f"{user} 0 {system} {idle} 5 0 3 {steal} {guest} 0"
    return f"cpu  {ticks}\ncpu0 {ticks}\nintr 123 0 0\nctxt 456\nbtime 1700000000\n"


def test_steal_share_of_the_cpu_time_between_start_and_stop(tmp_path):
    """/proc/stat's steal ticks over all ticks (user nice system idle iowait irq softirq steal)
    between the two reads; guest time is inside user's already and stays out of the total."""
    from flux_perf.instrument.host import CpuTicks, HostPressure, cpu_ticks

    stat = tmp_path / "stat"
    stat.write_text(proc_stat(user=1000, system=200, idle=5000, steal=100, guest=900))
    assert cpu_ticks(stat) == CpuTicks(steal=100, total=1000 + 200 + 5000 + 5 + 3 + 100)
    host = HostPressure(tmp_path / "no-psi", stat)
    # 700 ticks of user, 100 of system, 60 of idle and 140 stolen: 14 % of 1000.
    stat.write_text(proc_stat(user=1700, system=300, idle=5060, steal=240, guest=1500))
    assert host.steal_fraction() == pytest.approx(0.14)
    assert host.stall_fraction() is None, "no PSI here: steal is read all the same"
    stat.write_text(proc_stat(user=1700, system=300, idle=5060, steal=90))
    assert host.steal_fraction() == 0.0, "a steal counter that stepped back is no negative share"


@pytest.mark.parametrize("content", [
    None,  # no /proc/stat
    b"",
    b"cpu  1 2 3 4\n",  # a kernel without the steal column
    b"cpu  1 2 3 4 5 6 7 eight 9 10\n",
    b"cpu  1 2 3 4 5 6 7 -8 9 10\n",
    b"cpu0 1 2 3 4 5 6 7 8 9 10\nintr 1\n",  # no aggregate line
    b"\xff\xfe cpu 1 2 3\n",
], ids=["missing", "empty", "no-steal", "word", "negative", "no-aggregate", "binary"])
def test_steal_share_is_none_without_a_readable_proc_stat(tmp_path, content):
    from flux_perf.instrument.host import HostPressure, cpu_ticks

    stat = tmp_path / "stat"
    if content is not None:
        stat.write_bytes(content)
    assert cpu_ticks(stat) is None
    assert HostPressure(tmp_path / "no-psi", stat).steal_fraction() is None
    stat.write_text(proc_stat(user=1, system=1, idle=1, steal=1))
    assert HostPressure(tmp_path / "no-psi", stat).steal_fraction() is None, "no tick passed: no share"


@pytest.mark.parametrize("steal, disturbed", [(0.14, True), (0.05, False)])
def test_a_slow_verdict_on_a_host_whose_hypervisor_stole_cpu_time_is_disturbed(monkeypatch, steal, disturbed):
    """Steal over 10 % of the timed rounds' CPU time: `cpu-steal`, measured again once, and a slow
    verdict `disturbed`, named in words; under it the same rounds are judged (here: a failure)."""
    from flux_perf.gate.latency import describe_disturbance, judge_latency
    from flux_perf.instrument.telemetry import Flag

    monkeypatch.setattr("flux_perf.instrument.measure.HostPressure",
                        type("Host", (QuietHost,), {"steal_fraction": lambda self: steal}))
    rounds = scripted(itertools.cycle([600, 601, 602, 603]))  # 0.6 s against the 0.5 s budget
    timed = measure(rounds, MeasureSettings(rounds=8, max_rounds=8), cuda=False)
    assert timed.host_steal == steal and timed.attempts == (2 if disturbed else 1)
    assert timed.disturbed == ([Flag.CPU_STEAL] if disturbed else [])
    why = describe_disturbance(timed.disturbed, [], None, None, timed.host_stall, timed.host_steal)
    result = judge_latency([r.wall_ms / 1000 for r in timed.rounds], [BUDGET], disturbance=why)
    if disturbed:
        assert result.verdict is Verdict.DISTURBED and not result.failed
        assert result.disturbance == ("host CPU steal: the hypervisor took 14% of the CPU time of the timed rounds "
                                      "(/proc/stat)",)
        assert timed.notes == ["rounds disturbed (cpu-steal) after 2 attempts"]
    else:
        assert why == [] and result.verdict is Verdict.FAIL and result.failed


def test_a_scripted_generation_that_failed_halfway_leaves_the_next_one_right():
    """The scripted clock used to tell start from end by alternating calls: one generation that
    raised between them made every later one read 0 s."""
    from flux_perf.model.clocks import ScriptedClock

    clock = ScriptedClock(0.5, jitter=0.0)
    clock.start_wall()  # a generation that raises before its end
    start = clock.start_wall()
    assert clock.wall_ms(start) == 500.0 and clock.wall_ms(clock.start_wall()) == 500.0


def test_the_thread_clock_sees_a_round_spent_off_the_cpu():
    """A thread that waits (here: sleeps, as it would for the GIL) gives its CPU up and is not busy;
    one that computes is busier. Shares of CPU time, not speeds: a busy CI host cannot flip them."""
    from flux_perf.instrument.host import ThreadClock

    waiting = ThreadClock()
    for _ in range(5):
        time.sleep(0.01)
    assert waiting.busy_fraction() < 0.5
    assert waiting.switches() >= 5

    computing = ThreadClock()
    deadline = time.thread_time() + 0.05
    while time.thread_time() < deadline:
        pass
    assert computing.busy_fraction() > waiting.busy_fraction()


def test_timed_rounds_on_the_real_clock_say_how_busy_the_launching_thread_was():
    def run():
        time.sleep(0.002)  # the scripted round waits, as a thread kept off the GIL would
        return Generation(np.zeros((8, 8, 3), np.uint8), StageTimes(1.0, (2.0,), 1.0, 5.0))

    timed = measure(run, MeasureSettings(rounds=4), cuda=False)
    assert 0.0 <= timed.thread_busy < 0.9
    assert timed.thread_switches >= 1
    scripted_clock = measure(run, MeasureSettings(rounds=4), cuda=False, host_pressure=False)
    assert scripted_clock.thread_busy is None and scripted_clock.thread_switches is None


def test_the_launching_threads_readings_read_as_one_sentence():
    from flux_perf.instrument.host import describe_thread

    quiet = " (a quiet H100 read 99.7-99.98 %; a thread that waited for the GIL, a lock or the hypervisor reads less)."
    assert describe_thread(0.62, 1234.4) == ("The thread launching its kernels was on a CPU 62.0% of the rounds, "
                                             "giving it up 1234 times a round" + quiet)
    assert describe_thread(0.998, None) == "The thread launching its kernels was on a CPU 99.8% of the rounds" + quiet
    assert describe_thread(None, None) == ""  # the scripted clock reads no thread
