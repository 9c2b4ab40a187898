"""The report folder fails: a disk that fills or a folder that turns read-only while the run
measures is one line naming the folder and the OS error, the summary printed instead and a
failing exit (never a traceback or INTERNALERROR); a folder that cannot work (a name too long
for the file system, a parent that is a file, not writable) is refused before anything is
measured. The OS errors are simulated at the write itself, so the tests also hold as root
(where chmod protects nothing)."""

import errno
import os
from pathlib import Path

import pytest
from helpers import copy_budgets, finished_calibration, run_gpu_suite_here

LONG = "a" * 300  # one path component over the 255 bytes Linux file systems allow


@pytest.fixture
def failing_writes(monkeypatch):
    """fail(folder, code): every file written in `folder` (but the up-front write probe) raises
    OSError(code), as a full disk (ENOSPC) or a folder turned read-only (EROFS) does."""
    write_bytes = Path.write_bytes

    def fail(folder: Path, code: int):
        def write(self, data):
            if self.parent == folder and not self.name.startswith(".flux-perf-write-test"):
                raise OSError(code, os.strerror(code), str(self))
            return write_bytes(self, data)

        monkeypatch.setattr(Path, "write_bytes", write)

    return fail


def test_a_full_disk_at_report_time_is_one_line_and_the_summary(tmp_path, cli, failing_writes):
    report = tmp_path / "report"
    failing_writes(report, errno.ENOSPC)
    result = cli("run", "--device", "cpu", "--scenarios", "64x64@1", "--rounds", "1", "--report-dir", report)
    assert result.returncode == 1
    assert (f"flux-perf: could not write the report in {report}: No space left on device (ENOSPC); free space "
            "there or choose another folder") in result.stderr
    # No raw OSError ("[Errno 28] ...: '.results.json.tmp-123'"); stderr may hold a logging error of
    # an earlier in-process test's closed capture, not this run's.
    assert "Traceback" not in result.stdout and "[Errno" not in result.stderr and ".tmp-" not in result.stderr
    assert "# flux-perf summary" in result.stdout and "| 64x64@1 | bf16 |" in result.stdout
    assert not (report / "results.json").exists()


def test_a_read_only_report_folder_under_pytest_fails_the_run_with_the_summary(tmp_path, capsys, monkeypatch,
                                                                             failing_writes):
    copy_budgets(tmp_path / "baselines")
    report = tmp_path / "report"
    failing_writes(report, errno.EROFS)
    result = run_gpu_suite_here(capsys, monkeypatch, "-m", "h100", "tests/h100/test_latency.py", "--flux-device",
                                "cpu", "--flux-model", "tiny", "--flux-stacks", "bf16", "--flux-scenarios",
                                "64x64@1", "--flux-rounds", "2", "--flux-scripted-clock", "0.1",
                                f"--flux-baselines-dir={tmp_path / 'baselines'}", f"--flux-report-dir={report}")
    out = result.stdout + result.stderr
    # (stderr may hold a logging error of an earlier in-process test's closed capture: not this run's)
    assert result.returncode == 1 and "INTERNALERROR" not in out and "Traceback" not in result.stdout
    assert (f"FAILED: could not write the report in {report}: Read-only file system (EROFS)") in out
    assert "# flux-perf summary" in out and "| 64x64@1 | bf16 |" in out


@pytest.mark.parametrize("option, what", [("--report-dir", "report folder"), ("--baselines-dir", "--baselines-dir")])
def test_a_name_too_long_for_the_file_system_is_refused_before_measuring(tmp_path, cli, option, what):
    result = cli("run", "--device", "cpu", "--scenarios", "64x64@1", "--rounds", "1", option, tmp_path / LONG / "x")
    assert result.returncode == 2 and "[Errno" not in result.stderr and "measuring" not in result.stdout
    assert f"flux-perf: {what} {tmp_path}/{'a' * 40}...(300 characters)/x has a name longer than the 255 bytes" \
        in result.stderr


@pytest.mark.parametrize("option, what", [("--flux-report-dir", "report folder"),
                                          ("--flux-baselines-dir", "baselines folder")])
def test_a_name_too_long_under_pytest_is_a_usage_error(tmp_path, capsys, monkeypatch, option, what):
    copy_budgets(tmp_path / "baselines")
    paths = {"--flux-report-dir": tmp_path / "report", "--flux-baselines-dir": tmp_path / "baselines",
             option: tmp_path / LONG}
    result = run_gpu_suite_here(capsys, monkeypatch, "-m", "h100", "tests/h100/test_latency.py", "--flux-device",
                                "cpu", "--flux-model", "tiny", *(f"{name}={path}" for name, path in paths.items()))
    assert result.returncode == 4 and "INTERNALERROR" not in result.stdout + result.stderr
    assert f"flux-perf: {what} {tmp_path}/{'a' * 40}...(300 characters) has a name longer" in result.stderr


def test_a_report_folder_under_a_file_or_read_only_is_refused_before_measuring(tmp_path, cli, monkeypatch):
    (tmp_path / "file").write_text("")
    under_file = cli("run", "--device", "cpu", "--scenarios", "64x64@1", "--report-dir", tmp_path / "file" / "r")
    assert under_file.returncode == 2 and "measuring" not in under_file.stdout
    assert f"report folder {tmp_path}/file/r cannot be made: {tmp_path}/file exists and is not a folder" \
        in under_file.stderr
    write_bytes = Path.write_bytes

    def read_only(self, data):
        if self.parent == tmp_path / "ro":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", read_only)
    refused = cli("run", "--device", "cpu", "--scenarios", "64x64@1", "--report-dir", tmp_path / "ro")
    assert refused.returncode == 2 and "measuring" not in refused.stdout
    assert f"report folder {tmp_path}/ro is not writable: Read-only file system (EROFS)" in refused.stderr


def test_compare_and_table_name_a_path_they_cannot_read(tmp_path, cli):
    for command in (("compare", tmp_path / LONG, tmp_path / LONG), ("table", tmp_path / LONG)):
        result = cli(*command)
        assert result.returncode == 2 and "[Errno" not in result.stderr
        assert f"{'a' * 40}...(300 characters): cannot be read (File name too long)" in result.stderr


def test_a_json_file_of_calibrate_that_cannot_be_written_is_one_line(tmp_path, cli, monkeypatch, failing_writes):
    import flux_perf.gate.calibrate as calibrate

    monkeypatch.setattr(calibrate, "calibrate_scenario", lambda *a, **k: finished_calibration())
    monkeypatch.setattr(calibrate, "format_calibration", lambda result: "calibrated")
    (tmp_path / "file").write_text("")
    early = cli("calibrate", "--device", "cpu", "--scenarios", "64x64@2", "--json", tmp_path / "file" / "c.json")
    assert early.returncode == 2 and "calibrating" not in early.stdout
    assert f"flux-perf: --json folder {tmp_path}/file exists and is not a folder" in early.stderr
    failing_writes(tmp_path / "out", errno.ENOSPC)
    full = cli("calibrate", "--device", "cpu", "--scenarios", "64x64@2", "--json", tmp_path / "out" / "c.json")
    assert full.returncode == 2 and "[Errno" not in full.stderr and ".tmp-" not in full.stderr
    assert f"flux-perf: cannot write or read in {tmp_path}/out: No space left on device (ENOSPC)" in full.stderr
