"""A run cut short by SIGTERM (a timeout, a cancelled CI job) or SIGINT (Ctrl-C) keeps every case
that finished and says it was interrupted, by which signal and after how many cases: `flux-perf
run` and `pytest -m h100` as real processes sent a real signal once a finished case is on disk
(polled, never a sleep guess), `calibrate` and `ab` in this process with the signal sent from
inside their measuring. Nothing here depends on this machine's speed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, copy_budgets, finished_calibration, quiet_host

SCENARIOS = ",".join(f"64x64@{steps}" for steps in range(1, 11))  # ten cases: the signal lands mid-run


def _finished(results):
    """The ids of the cases results.json holds as finished (atomic writes: never half a file)."""
    try:
        records = json.loads(results.read_text())["records"]
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [r["id"] for r in records if not r["error"]]


def _interrupt_after_first_case(command, results, signum, log):
    """Start `command`, wait until results.json holds a finished case, send `signum`; (rc, output)."""
    with open(log, "w") as out:
        # SIGINT back to its default in the child: a test run in the background inherits it ignored.
        process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "CI": ""}, stdout=out,
                                   stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 300
            while not _finished(results):
                assert process.poll() is None, f"ended before any case was written:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no finished case on disk:\n{log.read_text()[-3000:]}"
                time.sleep(0.05)
            process.send_signal(signum)
            return process.wait(timeout=120), log.read_text()
        finally:
            if process.poll() is None:
                process.kill()


def test_sigterm_keeps_the_finished_cases_of_flux_perf_run(tmp_path):
    report = tmp_path / "report"
    rc, output = _interrupt_after_first_case(
        [sys.executable, "-m", "flux_perf", "run", "--device", "cpu", "--scenarios", SCENARIOS, "--rounds", "2",
         "--report-dir", str(report)], report / "results.json", signal.SIGTERM, tmp_path / "out.txt")
    assert rc == 128 + signal.SIGTERM, output[-3000:]
    saved = json.loads((report / "results.json").read_text())
    finished = _finished(report / "results.json")
    assert finished and len(finished) < 10, "the cases that finished, and not all of them"
    assert saved["interrupted"].startswith(f"interrupted by SIGTERM: {len(finished)} of 10 cases finished")
    assert "Run interrupted" in (report / "summary.md").read_text()
    assert "Traceback" not in output and f"report: {report / 'results.json'}" in output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_under_pytest_marks_the_run_interrupted(tmp_path, signum):
    copy_budgets(tmp_path / "baselines")
    report = tmp_path / "report"
    rc, output = _interrupt_after_first_case(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "h100", "tests/h100/test_latency.py",
         "--flux-device", "cpu", "--flux-model", "tiny", "--flux-stacks", "bf16", "--flux-scenarios", SCENARIOS,
         "--flux-rounds", "2", "--flux-scripted-clock", "0.1", f"--flux-baselines-dir={tmp_path / 'baselines'}",
         f"--flux-report-dir={report}"], report / "results.json", signum, tmp_path / "out.txt")
    assert rc == 2, output[-3000:]  # pytest's INTERRUPTED
    saved = json.loads((report / "results.json").read_text())
    finished = _finished(report / "results.json")
    assert finished and len(finished) < 10
    name = signal.Signals(signum).name
    assert saved["interrupted"].startswith(f"interrupted by {name}: {len(finished)} of 10 cases finished")
    assert "Run interrupted" in output, "the summary printed at the end says so too"


def test_an_interrupted_pytest_run_counts_only_the_cases_k_selected(tmp_path):
    copy_budgets(tmp_path / "baselines")
    report = tmp_path / "report"
    rc, output = _interrupt_after_first_case(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "h100", "tests/h100/test_latency.py",
         "-k", "bf16", "--flux-device", "cpu", "--flux-model", "tiny", "--flux-stacks", "bf16,fused-qkv",
         "--flux-scenarios", SCENARIOS, "--flux-rounds", "2", "--flux-scripted-clock", "0.1",
         f"--flux-baselines-dir={tmp_path / 'baselines'}", f"--flux-report-dir={report}"],
        report / "results.json", signal.SIGTERM, tmp_path / "out.txt")
    assert rc == 2, output[-3000:]
    finished = _finished(report / "results.json")
    assert finished and len(finished) < 10 and all(case.startswith("bf16-") for case in finished)
    interrupted = json.loads((report / "results.json").read_text())["interrupted"]
    assert interrupted.startswith(f"interrupted by SIGTERM: {len(finished)} of 10 cases finished"), \
        "-k left bf16's 10 cases of the 20 the options name"


def _signal_on_call(number, signum):
    """A stand-in that sends this process `signum` on its `number`-th call, as a timeout would."""
    calls = []

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) == number:
            os.kill(os.getpid(), signum)
        return calls

    return call


def test_an_interrupted_update_counts_only_the_cases_this_machine_can_run(tmp_path, cli, monkeypatch):
    from flux_perf.suite.session import FluxSession

    copy_budgets(tmp_path / "baselines")
    quiet_host(monkeypatch)  # an update refuses rounds timed under CPU contention
    case, signal_second = FluxSession.case, _signal_on_call(2, signal.SIGTERM)
    monkeypatch.setattr(FluxSession, "case", lambda self, *a, **k: signal_second() and case(self, *a, **k))
    result = cli("baselines", "update", "--device", "cpu", "--stacks", "bf16,fp8", "--scenarios", "64x64@1,64x64@2",
                 "--rounds", "2", "--baselines-dir", tmp_path / "baselines", "--report-dir", tmp_path / "report")
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "not updated: fp8" in result.stderr, "fp8 needs a CUDA GPU: never one of this run's cases"
    # The same selection, where this update writes (it named a bare `--missing`, into the checkout's baselines/).
    assert ("finish it with: flux-perf baselines update --missing --stacks bf16,fp8 --scenarios 64x64@1,64x64@2 "
            f"--device cpu --baselines-dir {tmp_path / 'baselines'}, which records") in result.stderr, result.stderr
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert saved["interrupted"] == "interrupted by SIGTERM: 1 of 2 cases finished"
    # No case failed: the `--missing` command calibrates the scenarios (it said "a case above failed;
    # fix it and run `flux-perf calibrate --write ...`", beside the command that finishes it).
    assert "a case above failed" not in result.stderr and "calibrate --write" not in result.stderr, result.stderr


def test_an_update_cut_during_its_calibration_names_the_command_that_finishes_it(tmp_path, cli, monkeypatch):
    """A bootstrap cut by a job's time limit while it calibrates: the scenario calibrated stays, and
    the message is the `--missing` command, which calibrates only the scenario left (it said only
    `flux-perf: interrupted by SIGTERM`; an outside-in run of the bootstrap)."""
    import flux_perf.gate.calibrate as calibrate

    copy_budgets(tmp_path / "baselines")
    quiet_host(monkeypatch)
    signal_second = _signal_on_call(2, signal.SIGTERM)
    monkeypatch.setattr(calibrate, "calibrate_scenario", lambda *a, **k: signal_second() and finished_calibration())
    monkeypatch.setattr(calibrate, "format_calibration", lambda result: "calibrated")
    update = ["baselines", "update", "--device", "cpu", "--stacks", "bf16", "--scenarios", "64x64@1,64x64@2",
              "--rounds", "2", "--baselines-dir", tmp_path / "baselines", "--report-dir", tmp_path / "report"]
    result = cli(*update)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    command = (f"flux-perf baselines update --missing --stacks bf16 --scenarios 64x64@1,64x64@2 --device cpu "
               f"--baselines-dir {tmp_path / 'baselines'}")
    assert f"finish it with: {command}" in result.stderr, result.stderr
    folder = next((tmp_path / "baselines").glob("cpu-*/*"))
    assert list(json.loads((folder / "calibration.json").read_text())["entries"]) == ["64x64@1"]
    monkeypatch.chdir(tmp_path)  # its report lands here
    resumed = cli(*command.split()[1:])  # word for word (no space in the folder)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "--missing: 0 of 2 cases to record" in resumed.stdout, resumed.stdout[-3000:]
    assert "calibrating fidelity at 64x64@2\n" in resumed.stdout, "only the scenario left"
    assert list(json.loads((folder / "calibration.json").read_text())["entries"]) == ["64x64@1", "64x64@2"]


def test_sigterm_keeps_the_finished_scenarios_of_calibrate(tmp_path, cli, monkeypatch):
    import flux_perf.gate.calibrate as calibrate

    signal_second = _signal_on_call(2, signal.SIGTERM)
    monkeypatch.setattr(calibrate, "calibrate_scenario", lambda *a, **k: signal_second() and finished_calibration())
    monkeypatch.setattr(calibrate, "format_calibration", lambda result: "calibrated")
    result = cli("calibrate", "--device", "cpu", "--scenarios", "64x64@2,64x64@1,64x64@3",
                 "--json", tmp_path / "calibration.json")
    assert result.returncode == 128 + signal.SIGTERM and "interrupted by SIGTERM" in result.stderr
    saved = json.loads((tmp_path / "calibration.json").read_text())
    assert list(saved["scenarios"]) == ["64x64@2"]
    assert saved["interrupted"] == "interrupted by SIGTERM: 1 of 3 scenarios finished"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler before the command is back"


def test_sigint_keeps_the_measured_cases_of_ab(tmp_path, cli, monkeypatch):
    import flux_perf.ab.orchestrator as orchestrator

    signal_later = _signal_on_call(25, signal.SIGINT)  # 10 pairs of the first case, then into the second

    class Worker:
        def __init__(self, side, checkout, log, cores=None):
            self.side = side

        def ask(self, cmd, **request):
            if cmd == "prepare":
                return {"ok": True, "pid": {"base": 1, "head": 2}[self.side], "warmup_s": [1.0], "fingerprint": "t"}
            rounds = len(signal_later())
            return {"ok": True, "wall_s": 1.0 + 0.001 * (rounds % 3)}

        def close(self):
            pass

    monkeypatch.setattr(orchestrator, "Worker", Worker)
    monkeypatch.setattr("flux_perf.commands.ab.check_runnable", lambda *_: None)  # fast runs on the fake worker
    result = cli("ab", "--base", ROOT, "--head", ROOT, "--stacks", "bf16,fast", "--scenarios", "64x64@2",
                 "--pairs", "10", "--device", "cpu", "--no-pin", "--json", tmp_path / "ab.json")
    assert result.returncode == 128 + signal.SIGINT and "interrupted by SIGINT" in result.stderr
    saved = json.loads((tmp_path / "ab.json").read_text())
    assert [case["stack"] for case in saved["cases"]] == ["bf16"] and not saved["final"]
    assert saved["interrupted"] == "interrupted by SIGINT: 1 of 2 cases measured"


def test_a_second_signal_during_the_final_write_is_noted_not_obeyed():
    from flux_perf.suite import interrupts

    with interrupts.catching():
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)  # the report would be written here, whole
        assert interrupts.describe() == "SIGTERM" and interrupts.exit_status() == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL and interrupts.received() is None
