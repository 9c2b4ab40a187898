"""The `flux-perf` command line, run as users run it."""

import json

import pytest
from helpers import copy_budgets, make_results, quiet_host
from helpers import run_flux_perf as flux_perf



def test_run_prints_the_stage_table(tmp_path, cli):
    result = cli("run", "--device", "cpu", "--resolution", "64", "--steps", "2", "--rounds", "2",
                       "--report-dir", str(tmp_path / "report"), "--save-image", str(tmp_path / "{scenario}.png"))
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "model: tiny (chosen by default" in out
    for row in ("reference encode", "step 1", "step 2", "decode", "total (device)", "wall (end to end)"):
        assert row in out
    assert "same image in every round (same seed): yes" in out
    assert (tmp_path / "64x64@2.png").exists()
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert results["records"][0]["rounds"] == 2
    assert "PYTORCH_CUDA_ALLOC_CONF" in {entry["name"] for entry in results["environment"]}


@pytest.mark.parametrize("args, message", [
    (("run", "--device", "cpu", "--resolution", "500", "--steps", "2"), "height=500 is not a multiple of 16"),
    (("run", "--device", "cpu", "--resolution", "64", "--steps", "0"), "steps=0"),
    (("run", "--device", "cpu", "--stack", "fp9"), "unknown stack or component 'fp9'"),
    (("run", "--device", "cuda", "--resolution", "64", "--steps", "1"), "no CUDA GPU is visible"),
    (("run", "--device", "cpu", "--model", "no/such/dir/x"), "no/such/dir/x"),
    (("run", "--device", "cpu", "--resolution", "abc"), "cannot read resolution 'abc'"),
    (("run", "--device", "cpu", "--resolution", "64x"), "cannot read resolution '64x'"),
    (("run", "--device", "cpu", "--resolution", "64x64x64"), "cannot read resolution '64x64x64'"),
    (("run", "--device", "cpu", "--resolution", "64", "--rounds", "0"), "--rounds 0"),
    (("run", "--device", "bogus", "--resolution", "64"), "device 'bogus' is not supported"),
    (("stacks", "--device", "bogus"), "device 'bogus' is not supported"),
    (("ab", "--base", ".", "--head", ".", "--device", "mps"), "device 'mps' is not supported"),
    (("run", "--device", "cpu", "--scenarios", ","), "no scenario in ','"),
    (("run", "--device", "cpu", "--report-dir", "/etc/hostname"), "/etc/hostname exists and is not a folder"),
    (("run", "--device", "cpu", "--resolution", "64", "--save-image", "/tmp/x_{foo}.png"),
     "only {scenario} and {stack} may appear"),
    (("run", "--device", "cpu", "--resolution", "64", "--save-image", "/tmp/x_{stack.name}.png"),
     "only {scenario} and {stack} may appear"),
    (("run", "--device", "cpu", "--scenarios", "64@2-g1.2.3"), "cannot read scenario '64@2-g1.2.3'"),
    (("compare", "a.json", "b.json", "--tolerance", "-1"), "tolerance -1.0: must be a fraction"),
    (("compare", "a.json", "b.json", "--tolerance", "nan"), "tolerance nan: must be a fraction"),
    (("calibrate", "--device", "cpu", "--repeats", "0"), "--repeats 0: must be >= 1"),
    (("calibrate", "--device", "cpu", "--margin", "0.5"), "--margin 0.5: must be >= 1"),
    (("run", "--device", "cpu", "--baselines-dir", "no/such/store"), "/no/such/store does not exist"),  # named absolute
    (("baselines", "migrate", "no/such/folder"), "no/such/folder: not a baseline folder"),
    # Given without --resolution they were ignored: the four default scenarios ran instead.
    (("run", "--device", "cpu", "--steps", "1", "--seed", "5"),
     "--steps 1, --seed 5 applies to --resolution only"),
    (("run", "--device", "cpu", "--scenarios", "64@1", "--resolution", "128"),
     "--scenarios 64@1 and --resolution both name the scenarios"),
    (("baselines", "update", "--device", "cpu", "--stacks", ""), "no stack in ''"),
    # Read as none: the band was placed without its variants, and with no break no separation was checked.
    (("calibrate", "--device", "cpu", "--scenarios", "64x64@1", "--lossless", ""), "--lossless '': names no variant"),
    (("calibrate", "--device", "cpu", "--scenarios", "64x64@1", "--breaks", ","), "--breaks ',': names no break"),
    (("calibrate", "--device", "cpu", "--scenarios", "64x64@1", "--stacks", ""), "--stacks '': names no stack"),
    (("stacks", "--device", "cuda"), "no CUDA GPU is visible"),
    (("run", "--device", "cpu", "--scenarios", "64@1,64x64@1"), "scenario 64x64@1 is named twice"),
    # An unset "$VAR": read as left out, these wrote into the current folder or used the default store/model.
    (("run", "--device", "cpu", "--resolution", "64", "--report-dir="), "--report-dir: '' names nothing"),
    (("run", "--device", "cpu", "--resolution", "64", "--baselines-dir", ""), "--baselines-dir: '' names nothing"),
    (("run", "--device", "cpu", "--resolution", "64", "--model="), "--model: '' names nothing"),
    (("run", "--device=", "--resolution", "64"), "--device: '' names nothing"),
    (("baselines", "show", "--baselines-dir="), "--baselines-dir: '' names nothing"),
    (("ab", "--base", ".", "--head", ".", "--json="), "--json: '' names nothing"),
    (("ab", "--base", "", "--head", "."), "--base: '' names nothing"),
    (("calibrate", "--restate="), "--restate: '' names nothing"),
])
def test_bad_input_is_one_clear_line(args, message, tmp_path, cli, monkeypatch, capsys):
    if args[0] == "compare":  # real files, so only the tolerance is wrong
        args = ("compare", make_results(tmp_path / "a.json", {"bf16-512x512@6": [0.65, 0.66]}),
                make_results(tmp_path / "b.json", {"bf16-512x512@6": [0.65, 0.66]}), *args[3:])
    monkeypatch.chdir(tmp_path)
    try:
        result = cli(*args)
        code, err = result.returncode, result.stderr
    except SystemExit as usage:  # argparse's own usage error (a value its `type` refused)
        code, err = usage.code, capsys.readouterr().err
    assert code == 2 and message in err


@pytest.mark.parametrize("error", [ValueError, TypeError])
def test_a_bug_shows_its_traceback_not_a_usage_line(cli, monkeypatch, error):
    """Only what the user can fix is one line (exit 2): a ValueError from a bug is not theirs."""
    def broken(args):
        raise error("a bug in flux-perf, not in the command line")

    monkeypatch.setattr("flux_perf.commands.stacks.run", broken)
    with pytest.raises(error, match="a bug in flux-perf"):
        cli("stacks", "--device", "cpu")


def test_stack_that_cannot_run_here(tmp_path, cli):
    result = cli("run", "--device", "cpu", "--stack", "fp8", "--resolution", "64", "--steps", "1")
    assert result.returncode == 2 and "needs a CUDA GPU" in result.stderr


def test_stacks_lists_what_runs_here(cli):
    from flux_perf.components.stacks import NAMED_STACKS

    result = cli("stacks", "--device", "cpu")
    assert result.returncode == 0
    assert "fast" in result.stdout and "skip: attn-cudnn needs a CUDA GPU" in result.stdout
    assert "skip: model-cpu-offload needs a CUDA GPU" in result.stdout
    lines = result.stdout.splitlines()
    named = lines.index("named stacks:")
    assert lines[named + 1].split() == ["bf16", "eager", "bf16,", "default", "SDPA"] and lines[named + 2].split() == ["ok"]
    # every named stack's components start in one column, whatever the length of its name
    block = lines[named + 1:lines.index("", named)]
    starts = {line.index(" " + line.split()[1]) for line in block[::2]}
    assert len(block) == 2 * len(NAMED_STACKS) and len(starts) == 1, block


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_baselines_update_refused_under_ci(tmp_path, ci, cli, monkeypatch):
    monkeypatch.setenv("CI", ci)
    result = cli("baselines", "update", "--device", "cpu", "--baselines-dir", str(tmp_path))
    assert result.returncode == 2 and f"refusing to rewrite baselines under CI={ci}" in result.stderr


def test_migrate_under_ci_names_its_own_force_option(tmp_path, cli, monkeypatch):
    """It named `--flux-force-update (pytest) or --force (flux-perf baselines update)`: neither migrates."""
    monkeypatch.setenv("CI", "true")
    result = cli("baselines", "migrate", str(tmp_path))
    assert result.returncode == 2 and "Pass --force (flux-perf baselines migrate --force FOLDER)" in result.stderr
    assert "--flux-force-update" not in result.stderr, result.stderr


def test_run_and_show_without_references_name_the_folder_they_read(tmp_path, cli):
    """`flux-perf run` judges nothing, yet said "every case fails until they are recorded"; it and
    `baselines show` named a bare `flux-perf baselines update`, which records into the checkout's
    baselines/, not the --baselines-dir they read."""
    baselines = tmp_path / "other baselines"
    copy_budgets(baselines)
    run = cli("run", "--device", "cpu", "--model", "tiny", "--resolution", "64", "--steps", "2", "--rounds", "1",
              "--baselines-dir", baselines, "--report-dir", tmp_path / "report")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "every case fails" not in run.stdout and "this run judges nothing against references" in run.stdout
    quoted = f"'{baselines}'"  # a space: one word for the shell
    assert ("with: flux-perf baselines update --stacks bf16 --scenarios 64x64@2 --model tiny --device cpu "
            f"--baselines-dir {quoted}\n") in run.stdout, run.stdout[-2000:]
    show = cli("baselines", "show", "--baselines-dir", baselines)
    assert f"(record them with: flux-perf baselines update --baselines-dir {quoted})" in show.stdout, show.stdout


def test_a_bootstrap_whose_calibration_lost_a_break_writes_no_band_and_exits_1(tmp_path, cli, monkeypatch):
    import flux_perf.gate.calibrate as calibrate

    output = calibrate._output

    def failing(runner, stack_spec, scenario, plant=None, **kwargs):
        if plant == "wrong-shift":
            raise RuntimeError("out of memory")
        return output(runner, stack_spec, scenario, plant, **kwargs)

    monkeypatch.setattr(calibrate, "_output", failing)
    copy_budgets(tmp_path)
    quiet_host(monkeypatch)
    update = cli("baselines", "update", "--device", "cpu", "--scenarios", "64x64@2", "--rounds", "2",
                 "--stacks", "fused-qkv", "--baselines-dir", str(tmp_path), "--report-dir", str(tmp_path / "report"))
    assert update.returncode == 1, update.stderr[-2000:]
    assert "64x64@2 fused-qkv: latency new" in update.stdout, "the references are recorded all the same"
    assert "incomplete calibration: 64x64@2: not written: wrong-shift (RuntimeError: out of memory)" in update.stderr
    assert not list(tmp_path.glob("cpu-*/*/calibration.json"))


def test_an_update_that_failed_a_case_names_the_runs_calibrate_command(tmp_path, cli, monkeypatch):
    """It said a bare `flux-perf calibrate --write`: the default model, device and the checkout's
    baselines/, not the folder the update wrote to."""
    import flux_perf.commands.baselines as baselines

    copy_budgets(tmp_path)
    monkeypatch.setattr(baselines, "run_cases", lambda *args, **kwargs: 1)  # a case failed; nothing measured
    update = cli("baselines", "update", "--device", "cpu", "--scenarios", "64x64@1", "--stacks", "fused-qkv",
                 "--baselines-dir", tmp_path, "--report-dir", tmp_path / "report")
    assert update.returncode == 1
    assert ("not calibrated (64x64@1): a case above failed; fix it and run `flux-perf calibrate --write --stacks "
            f"fused-qkv --scenarios 64x64@1 --device cpu --baselines-dir {tmp_path}`") in update.stderr, update.stderr


def test_baselines_update_bootstraps_a_new_machine_and_show_lists_it(tmp_path, cli, monkeypatch):
    """On a GPU model (here: this CPU) with nothing recorded, one command records every selected
    stack's references, the bf16 image and latents, and the fidelity calibration, case by case."""
    copy_budgets(tmp_path)
    quiet_host(monkeypatch)  # an update refuses rounds timed under CPU contention
    update = cli("baselines", "update", "--device", "cpu", "--scenarios", "64x64@2", "--rounds", "2",
                 "--stacks", "fused-qkv", "--baselines-dir", str(tmp_path), "--report-dir", str(tmp_path / "report"))
    assert update.returncode == 0, update.stderr[-2000:]
    assert "[1/2] bf16 at 64x64@2" in update.stdout and "[2/2] fused-qkv at 64x64@2" in update.stdout
    # Every stack's latency reference is refreshed and printed, not only bf16's.
    assert "64x64@2: baseline image new" in update.stdout
    assert "64x64@2 bf16: latency new" in update.stdout and "64x64@2 fused-qkv: latency new" in update.stdout
    assert "calibrating fidelity at 64x64@2" in update.stdout
    assert "64x64@2: new: band SSIM" in update.stdout
    show = cli("baselines", "show", "--baselines-dir", str(tmp_path))
    assert "bf16 baselines for 64x64@2" in show.stdout and "latency.json 64x64@2 fused-qkv:" in show.stdout
    assert "fidelity.json 64x64@2 fused-qkv: SSIM" in show.stdout, "each stack's recorded fidelity is listed"
    assert "own latents kept" in show.stdout.split("fused-qkv: SSIM")[1].splitlines()[0]
    assert "calibration.json 64x64@2 fidelity: lossless band SSIM >=" in show.stdout
    assert next(tmp_path.glob("cpu-*/*/64x64@2.fused-qkv.latents.npy")).stat().st_size > 0
    latency = next(tmp_path.glob("cpu-*/*/latency.json"))
    recorded = latency.read_text()
    latency.write_text("[1, 2]")
    broken = cli("baselines", "show", "--baselines-dir", str(tmp_path))
    assert broken.returncode == 1 and "latency.json: UNREADABLE" in broken.stdout
    assert "fidelity.json 64x64@2 fused-qkv: SSIM" in broken.stdout, "the other files are still listed"
    # Issue 29: a trailing comma, then an update of bf16 alone: every other stack's entry was dropped.
    latency.write_text(recorded.rstrip()[:-1] + ",}\n")
    again = cli("baselines", "update", "--device", "cpu", "--scenarios", "64x64@2", "--rounds", "2", "--stacks",
                "bf16", "--baselines-dir", str(tmp_path), "--report-dir", str(tmp_path / "report"))
    assert again.returncode == 2 and f"flux-perf: {latency} is not valid JSON: line " in again.stderr
    assert "git checkout -- " in again.stderr and "[1/" not in again.stdout, "stopped before measuring"
    assert latency.read_text() == recorded.rstrip()[:-1] + ",}\n", "the file is left as it was"


def test_baselines_update_of_a_stack_this_machine_cannot_run_is_exit_6_and_listed(tmp_path, cli, monkeypatch):
    """fp8 on a CPU: bf16 is recorded, fp8 is not; as `--flux-update-baselines --flux-stacks fp8` does, the
    exit is 6 and results.json lists it under skipped (was exit 0 and `skipped: []`)."""
    copy_budgets(tmp_path)
    quiet_host(monkeypatch)
    update = cli("baselines", "update", "--device", "cpu", "--scenarios", "64x64@2", "--rounds", "2", "--stacks",
                 "fp8", "--baselines-dir", str(tmp_path), "--report-dir", str(tmp_path / "report"))
    assert update.returncode == 6, update.stdout[-2000:] + update.stderr[-2000:]
    assert "not updated: fp8: attn-cudnn needs a CUDA GPU" in update.stderr
    assert "exit 6: not run: fp8 (this machine cannot run it): its references were not updated" in update.stderr
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [(s["stack"], s["scenario"]) for s in saved["skipped"]] == [("fp8", "64x64@2")]
    assert [r["id"] for r in saved["records"]] == ["bf16-64x64@2"] and "64x64@2: new: band SSIM" in update.stdout


def test_baselines_update_missing_records_only_what_is_missing_or_stale(tmp_path, cli, monkeypatch):
    """A bootstrap cut short (a job's time limit) is finished by the same command with --missing:
    cases recorded and fresh are kept, a new scenario is recorded and calibrated, and a removed
    entry is recorded again, alone."""
    copy_budgets(tmp_path)
    quiet_host(monkeypatch)

    def update(scenarios, *more):
        return cli("baselines", "update", "--device", "cpu", "--scenarios", scenarios, "--rounds", "2", "--stacks",
                   "fused-qkv", "--baselines-dir", str(tmp_path), "--report-dir", str(tmp_path / "report"), *more)

    assert update("64x64@2").returncode == 0
    both = update("64x64@2,64x64@1", "--missing")
    assert both.returncode == 0, both.stderr[-2000:]
    assert "kept: bf16 at 64x64@2 (recorded and fresh)" in both.stdout
    assert "kept: fused-qkv at 64x64@2 (recorded and fresh)" in both.stdout
    assert "--missing: 2 of 4 cases to record" in both.stdout
    assert "[1/2] bf16 at 64x64@1" in both.stdout and "[2/2] fused-qkv at 64x64@1" in both.stdout
    assert "calibrating fidelity at 64x64@1" in both.stdout and "calibrating fidelity at 64x64@2" not in both.stdout
    latency = next(tmp_path.glob("cpu-*/*/latency.json"))
    table = json.loads(latency.read_text())
    del table["entries"]["64x64@1"]["fused-qkv"]
    latency.write_text(json.dumps(table))
    again = update("64x64@2,64x64@1", "--missing")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "--missing: 1 of 4 cases to record" in again.stdout and "[1/1] fused-qkv at 64x64@1" in again.stdout
    assert "fused-qkv" in json.loads(latency.read_text())["entries"]["64x64@1"]
    done = update("64x64@2,64x64@1", "--missing")
    assert done.returncode == 0 and "--missing: 0 of 4 cases to record" in done.stdout


def test_baselines_update_missing_records_a_stack_whose_fidelity_predates_the_bf16_baseline(tmp_path, cli,
                                                                                             monkeypatch):
    """An update is stack-major: bf16 at every scenario first. One that re-records on purpose and is
    cut short (its hint: finish it with --missing) leaves the other stacks' fidelity measured against
    the replaced bf16 image, neither missing nor stale: --missing kept them as "recorded and fresh",
    and every later gate run compared their SSIM with one measured against other pixels."""
    copy_budgets(tmp_path)
    quiet_host(monkeypatch)
    args = ("baselines", "update", "--device", "cpu", "--scenarios", "64x64@2", "--rounds", "2", "--stacks",
            "fused-qkv", "--baselines-dir", str(tmp_path), "--report-dir", str(tmp_path / "report"))
    assert cli(*args).returncode == 0
    # As though bf16 were recorded again after fused-qkv (same second on this machine: moved back instead).
    fidelity = next(tmp_path.glob("cpu-*/*/fidelity.json"))
    table = json.loads(fidelity.read_text())
    table["entries"]["64x64@2"]["fused-qkv"]["provenance"]["recorded_at"] = "2020-01-01T00:00:00+00:00"
    fidelity.write_text(json.dumps(table))
    again = cli(*args, "--missing")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "kept: bf16 at 64x64@2 (recorded and fresh)" in again.stdout
    assert "to record: fused-qkv at 64x64@2: its fidelity was measured against an earlier bf16 baseline" \
        in again.stdout, again.stdout[-2000:]
    assert "--missing: 1 of 2 cases to record" in again.stdout
    entry = json.loads(fidelity.read_text())["entries"]["64x64@2"]["fused-qkv"]
    assert entry["provenance"]["recorded_at"] != "2020-01-01T00:00:00+00:00", "recorded again"


def test_baselines_show_names_a_missing_folder_and_each_bad_entry(tmp_path, cli):
    """Issue 29: a missing folder printed nothing with exit 0; a number-valued fidelity entry or a
    list `software` gave a traceback; NaN and "high" were shown as values."""
    missing = cli("baselines", "show", "--baselines-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and f"baselines folder {tmp_path / 'nowhere'} does not exist" in missing.stderr
    folder = tmp_path / "cpu-x" / "tiny-y"
    folder.mkdir(parents=True)
    good = {"median_s": 0.25, "samples_s": [0.25], "provenance": {"recorded_at": "2026-12-06T05:13:49+00:00"}}
    (folder / "latency.json").write_text(json.dumps({"flux_perf_store": 2, "entries": {"64x64@2": {
        "bf16": good, "fast": {"median_s": float("nan")}, "fp8": {**good, "provenance": {"recorded_at": "high"}},
        "compile": {**good, "provenance": {"software": ["torch"]}}}}}))
    (folder / "fidelity.json").write_text(json.dumps({"flux_perf_store": 2, "entries": {"64x64@2": 5}}))
    shown = cli("baselines", "show", "--baselines-dir", str(tmp_path))
    assert shown.returncode == 1 and "Traceback" not in shown.stdout + shown.stderr
    lines = shown.stdout.splitlines()
    assert "  latency.json 64x64@2 bf16: 0.250 s over 1 rounds, recorded 2026-12-06T05:13:49+00:00" in lines
    unreadable = {line.split(":")[0].strip(): line for line in lines if "UNREADABLE" in line}
    assert set(unreadable) == {"latency.json 64x64@2 fast", "latency.json 64x64@2 fp8", "latency.json 64x64@2 compile",
                               "fidelity.json"}
    assert f"{folder / 'latency.json'} [64x64@2][fast]: median_s=nan is not a positive" in unreadable[
        "latency.json 64x64@2 fast"]
    assert "provenance.recorded_at='high' is not an ISO date" in unreadable["latency.json 64x64@2 fp8"]
    assert "provenance.software=['torch'] is not an object" in unreadable["latency.json 64x64@2 compile"]
    assert "`entries` [64x64@2] is 5" in unreadable["fidelity.json"]
    assert f"4 unreadable in {tmp_path}" in shown.stderr


def test_installed_without_a_checkout_names_the_option(tmp_path):
    (tmp_path / "none").mkdir()  # a folder, but no store in it
    result = flux_perf("run", "--device", "cpu", "--resolution", "64", "--baselines-dir", str(tmp_path / "none"))
    assert result.returncode == 2 and f"no budgets.toml in {tmp_path / 'none'}" in result.stderr


def test_compare_exit_codes(tmp_path, cli):
    base = make_results(tmp_path / "base.json", {"bf16-512x512@6": [0.65, 0.651, 0.649, 0.652, 0.650]})
    same = make_results(tmp_path / "same.json", {"bf16-512x512@6": [0.651, 0.650, 0.652, 0.649, 0.650]})
    slower = make_results(tmp_path / "slow.json", {"bf16-512x512@6": [0.70, 0.701, 0.699, 0.702, 0.700]})
    ok = cli("compare", base, same)
    assert ok.returncode == 0 and "same" in ok.stdout
    bad = cli("compare", base, slower)
    assert bad.returncode == 1 and "slower" in bad.stdout and "+7.7%" in bad.stdout
    faster = make_results(tmp_path / "fast.json", {"bf16-512x512@6": [0.60, 0.601, 0.599, 0.602, 0.600]})
    assert cli("compare", base, faster).returncode == 0, "faster is never a problem"
    noisy = make_results(tmp_path / "noisy.json", {"bf16-512x512@6": [0.62, 0.70, 0.64, 0.69, 0.66]})
    undecided = cli("compare", base, noisy)
    assert undecided.returncode == 6 and "inconclusive" in undecided.stdout, undecided.stdout
    assert "not decided: bf16-512x512@6" in undecided.stderr
    broken = cli("compare", base, tmp_path / "missing.json")
    assert broken.returncode == 2 and "no such file" in broken.stderr


def test_compare_corrects_across_its_cases_so_more_cases_are_not_more_false_alarms(tmp_path, cli):
    """Each case was judged at 95 % alone: a run of 16 cases had 16 chances at a false `slower`.
    A case slower by its own interval now needs Holm's correction over the compared cases."""
    base_rounds = [1.000 + 0.001 * i for i in range(8)]
    barely = [1.05 + 0.001 * i for i in range(7)] + [1.000]  # its interval 1.045-1.052; p 0.005
    clear = [1.05 + 0.001 * i for i in range(8)]  # no overlap: p 1/12870
    others = {f"bf16-{64 + 16 * i}x{64 + 16 * i}@2": base_rounds for i in range(15)}
    base = make_results(tmp_path / "base.json", {"fast-512x512@6": base_rounds, **others})
    many = cli("compare", base, make_results(tmp_path / "many.json", {"fast-512x512@6": barely, **others}))
    assert many.returncode == 6, many.stdout + many.stderr
    assert "inconclusive (slower at 95 % alone, not after Holm's correction over 16 cases)" in many.stdout
    two = {"fast-512x512@6": base_rounds, "bf16-64x64@2": base_rounds}
    alone = cli("compare", make_results(tmp_path / "b2.json", two),
                make_results(tmp_path / "h2.json", {**two, "fast-512x512@6": barely}))
    assert alone.returncode == 1 and "slower" in alone.stdout, "over 2 cases the same rounds are slower"
    caught = cli("compare", base, make_results(tmp_path / "clear.json", {"fast-512x512@6": clear, **others}))
    assert caught.returncode == 1 and "Holm" not in caught.stdout, "a clear slow-down survives 16 cases"


def test_a_compare_that_compared_no_case_is_never_exit_0(tmp_path, cli):
    """Runs that share no measured case give no verdict at all (was exit 0, as if the head were fine)."""
    empty = make_results(tmp_path / "empty.json", {})
    full = make_results(tmp_path / "full.json", {"bf16-512x512@6": [0.65, 0.651], "fast-512x512@6": [0.3, 0.31]})
    skipped = json.loads(empty.read_text())
    skipped["skipped"] = [{"stack": "fp8", "components": "fp8", "scenario": "512x512@6", "reason": "needs a GPU"}]
    (tmp_path / "skipped.json").write_text(json.dumps(skipped))
    for base, head, why in ((empty, empty, "neither run holds a measured case"),
                            (tmp_path / "skipped.json", tmp_path / "skipped.json", "neither run holds a measured case"),
                            (empty, full, "no case was measured in both runs (2 new in head)")):
        result = cli("compare", base, head)
        assert result.returncode == 6, (base, head, result.stdout, result.stderr)
        assert f"nothing compared: {why}" in result.stderr
    assert cli("compare", full, empty).returncode == 1, "a head that lost every case is a regression, as before"


def test_compare_fails_when_the_head_lost_a_case(tmp_path, cli):
    base = make_results(tmp_path / "base.json", {"bf16-512x512@6": [0.65, 0.651], "fast-512x512@6": [0.3, 0.31]})
    errored = make_results(tmp_path / "head.json", {"bf16-512x512@6": [0.65, 0.651], "fast-512x512@6": []},
                           errors={"fast-512x512@6": "KeyError: '_class_name'"})
    result = cli("compare", base, errored)
    assert result.returncode == 1 and "fast-512x512@6" in result.stdout and "lost in head: KeyError" in result.stdout
    missing = make_results(tmp_path / "head2.json", {"bf16-512x512@6": [0.65, 0.651]})
    result = cli("compare", base, missing)
    assert result.returncode == 1 and "lost in head: missing from the head run" in result.stdout


def test_compare_never_passes_a_case_the_base_did_not_measure(tmp_path, cli):
    """A case the base errored on was compared with nothing: it read `not measured in base`, exit 0."""
    rounds = [0.65 + 0.001 * i for i in range(8)]
    errored = make_results(tmp_path / "base.json", {"bf16-512x512@6": rounds, "fast-512x512@6": []},
                           errors={"fast-512x512@6": "OutOfMemoryError: CUDA out of memory"})
    head = make_results(tmp_path / "head.json", {"bf16-512x512@6": rounds, "fast-512x512@6": [0.3] * 8})
    result = cli("compare", errored, head)
    assert result.returncode == 6, result.stdout + result.stderr
    assert "not judged: fast-512x512@6: the base run did not measure it" in result.stderr
    new = make_results(tmp_path / "new.json", {"bf16-512x512@6": rounds, "fast-512x512@6": [0.3] * 8})
    assert cli("compare", make_results(tmp_path / "old.json", {"bf16-512x512@6": rounds}), new).returncode == 0, \
        "a case new in the head has no base to be slower than: as documented, not a failure"


def _disturbed(path, flags=(), verdict=True):
    """The run at `path` with its case's rounds marked disturbed: the gate's verdict, or only flags."""
    from flux_perf.report.records import read_results, write_results
    from flux_perf.report.verdicts import LatencyRecord

    results = read_results(path)
    for record in results.records:
        record.flags = list(flags)
        if verdict:
            record.latency = LatencyRecord("disturbed", disturbance=("host CPU contention: 40% of the timed rounds",))
    return write_results(results, path)


def test_compare_never_judges_rounds_the_machine_slowed(tmp_path, cli):
    """A base whose rounds a busy host slowed by 10 % read a head 5 % slower as `faster`, exit 0."""
    case = "bf16-512x512@6"
    base = [1.0 + 0.001 * i for i in range(8)]
    clean = make_results(tmp_path / "clean.json", {case: base})
    slowed = _disturbed(make_results(tmp_path / "slowed.json", {case: [t * 1.10 for t in base]}))
    regressed = make_results(tmp_path / "head.json", {case: [t * 1.05 for t in base]})
    hidden = cli("compare", slowed, regressed)
    assert hidden.returncode == 6, hidden.stdout + hidden.stderr
    assert "disturbed (base's rounds were disturbed (host CPU contention: 40% of the timed rounds)" in hidden.stdout
    assert f"not judged: {case}: disturbed rounds" in hidden.stderr
    flagged = _disturbed(make_results(tmp_path / "flagged.json", {case: [t * 1.10 for t in base]}),
                         flags=["other-processes", "power-cap"], verdict=False)
    assert cli("compare", flagged, regressed).returncode == 6, "a disturbing flag of a `flux-perf run` too"
    assert "base's rounds were disturbed (other-processes)" in cli("compare", flagged, regressed).stdout
    # What a disturbance could not have made stands: a head slower than a slowed base, faster on a slowed head.
    assert cli("compare", _disturbed(make_results(tmp_path / "b.json", {case: base})), regressed).returncode == 1
    slow_head = _disturbed(make_results(tmp_path / "h.json", {case: [t * 0.9 for t in base]}))
    assert cli("compare", clean, slow_head).returncode == 0, "faster is never a problem"
    assert cli("compare", clean, _disturbed(regressed)).returncode == 6, "a slowed head judges nothing either"


@pytest.mark.parametrize("head_kwargs, message", [
    ({"gpu": None}, "different GPU: base 'NVIDIA H100 80GB HBM3', head None"),
    ({"fingerprint": "tiny-y"}, "different model weights: base 'synthetic-x', head 'tiny-y'"),
])
def test_compare_refuses_other_machines_and_weights(tmp_path, cli, head_kwargs, message):
    base = make_results(tmp_path / "base.json", {"bf16-512x512@6": [0.65, 0.651]})
    head = make_results(tmp_path / "head.json", {"bf16-512x512@6": [0.33, 0.331]}, **head_kwargs)
    result = cli("compare", base, head)
    assert result.returncode == 2 and message in result.stderr


def _planted(path, **plant):
    from flux_perf.report.records import read_results, write_results

    results = read_results(path)
    for record in results.records:
        for key, value in plant.items():
            setattr(record, key, value)
    return write_results(results, path)


@pytest.mark.parametrize("base_plant, head_plant, message", [
    ({"injected_slowdown": 0.5}, {}, "cannot compare: the base run was made with an injected slow-down of 50% "
                                     "(--flux-inject-slowdown), the head run with no plant"),
    ({}, {"planted": "noise:0.01"}, "cannot compare: the base run was made with no plant, the head run with the "
                                    "planted components noise:0.01 (--flux-plant)"),
    ({"injected_slowdown": 0.5}, {"injected_slowdown": 0.1}, "the head run with an injected slow-down of 10%"),
])
def test_compare_refuses_a_run_made_with_a_test_only_plant(tmp_path, cli, base_plant, head_plant, message):
    """A base slowed by --flux-inject-slowdown 0.5 made an unchanged head read `faster`, exit 0."""
    rounds = [0.65, 0.651, 0.652, 0.653, 0.654, 0.655, 0.656, 0.657]
    base = _planted(make_results(tmp_path / "base.json", {"bf16-512x512@6": [r * 1.5 for r in rounds]}), **base_plant)
    head = _planted(make_results(tmp_path / "head.json", {"bf16-512x512@6": rounds}), **head_plant)
    result = cli("compare", base, head)
    assert result.returncode == 2 and message in result.stderr and "faster" not in result.stdout, result
    assert len(result.stderr.strip().splitlines()) == 1
    # Both runs with the same plant: the plant cancels out, so the code is compared.
    same = {**base_plant, **head_plant}
    _planted(base, **same)
    _planted(head, **same)
    assert "faster" in cli("compare", base, head).stdout


@pytest.mark.parametrize("content, message", [
    ('{"records": []}', "results schema None"),
    ('{"flux_perf_results": 9, "records": []}', "results schema 9"),
    ('{"flux_perf_results": 2, "records": [{"stack": "bf16"}]}', "bad.json: key 'machine' is missing"),
    ('{"flux_perf_results": 2, "machine": {"model": {"fingerprint": "f"}}, "records": [{"stack": "bf16"}]}',
     "bad.json: record 0: key 'id' is missing"),
    ('{"flux_perf_results": 2, "machine": {"model": {"fingerprint": "f"}}, "records": [{"id": "a", "stack": "a", '
     '"stack_key": "a", "components": "", "lossless": true, "scenario": {"id": "x"}, "model": "m", "fingerprint": "f", '
     '"gpu": null, "device": "cpu", "wall_samples_s": ["slow"]}]}', "record 0 (a): key 'wall_samples_s' holds str 'slow'"),
])
def test_compare_refuses_broken_results(tmp_path, cli, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    good = make_results(tmp_path / "good.json", {"bf16-512x512@6": [0.65, 0.651]})
    result = cli("compare", good, bad)
    assert result.returncode == 2 and message in result.stderr
    folder = cli("compare", good, tmp_path)
    assert folder.returncode == 2 and "a directory without a results.json" in folder.stderr


def test_table_merges_committed_runs(cli):
    result = cli("table", "docs/results/run1.json", "--stacks", "bf16,fast")
    assert result.returncode == 0
    assert "| 1024x1024@8 | fast |" in result.stdout and "| 512x512@6 | bf16 |" in result.stdout


def test_table_says_beside_each_latency_whether_the_gate_judged_it(cli):
    """A latency the run could not judge reads as one beside the judged ones (it was a bare number)."""
    result = cli("table", "docs/results/gate-512-session15.json", "--scenarios", "512x512@4")
    assert result.returncode == 0 and "| latency s (95% CI) | gate |" in result.stdout
    rows = {line.split(" | ")[1]: line for line in result.stdout.splitlines() if line.startswith("| 512x512@4 |")}
    assert "| INCONCLUSIVE |" in rows["compile"] and "| INCONCLUSIVE |" in rows["fp8"], result.stdout
    assert "| pass" in rows["bf16"] and "INCONCLUSIVE" not in rows["bf16"]


def test_table_filters_scenarios_and_lists_what_could_not_run(cli):
    result = cli("table", "docs/results/run1.json", "docs/results/components-skipped.json",
                       "--scenarios", "1024x1024@8")
    assert result.returncode == 0
    assert "| 1024x1024@8 | bf16 |" in result.stdout and "| 512x512@6 |" not in result.stdout
    assert ("| 1024x1024@8 | fp8-te | fp8-te | fp8-te needs the Python package(s) transformer_engine, not installed "
            "here | components-skipped |") in result.stdout
    typo = cli("table", "docs/results/run1.json", "--stacks", "bf16,fsat", "--scenarios", "512x512@6")
    assert typo.returncode == 2 and "--stacks: fsat is in none of these runs; they hold bf16" in typo.stderr
    missing = cli("table", "docs/results/run1.json", "docs/results/no-such-run.json")
    assert missing.returncode == 2 and "docs/results/no-such-run.json: no such file" in missing.stderr
    as_json = json.loads(cli("table", "docs/results/run1.json", "--stacks", "bf16", "--json").stdout)
    rows = {row["scenario"]: row for row in as_json["rows"]}
    assert rows["1024x1024@8"]["speedup_vs_bf16"] == 1.0 and rows["1024x1024@8"]["latency_s"] > 1.0


def test_options_a_command_would_ignore_are_refused_naming_them(tmp_path, cli, capsys):
    """Given where they do nothing, these were ignored without a word, exit 0: `table --stacks ""` (an unset
    "$VAR") read as no filter, `--kind physics --json` wrote the component rows, `calibrate --restate` with
    --json wrote no file and restated every scenario, `calibrate --rounds`/`--report-dir` timed and wrote
    nothing (and a read-only current folder refused a report calibrate never writes)."""
    run = "docs/results/run1.json"
    for args, message in [
        (("table", run, "--stacks", ""), "--stacks '': names nothing; name one or more, or leave --stacks out"),
        (("table", run, "--scenarios", ","), "--scenarios ',': names nothing"),
        (("table", run, "--kind", "physics", "--json"), "--kind physics with --json: --json writes the component rows"),
        (("calibrate", "--restate", tmp_path, "--json", tmp_path / "c.json", "--scenarios", "64x64@1"),
         f"--restate {tmp_path} with --scenarios, --json: --restate measures nothing"),
    ]:
        result = cli(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stdout[-500:], result.stderr)
    assert not (tmp_path / "c.json").exists()
    short = cli("table", run, "--scenarios", "512@6", "--stacks", "bf16,")  # as runs name them; `,` adds nothing
    assert short.returncode == 0 and "| 512x512@6 | bf16 |" in short.stdout, short.stderr
    for option in ("--rounds", "--report-dir"):
        with pytest.raises(SystemExit) as usage:
            cli("calibrate", option, "5")
        assert usage.value.code == 2 and f"unrecognized arguments: {option} 5" in capsys.readouterr().err


def test_an_interrupted_run_keeps_what_finished(tmp_path, cli, monkeypatch):
    from flux_perf.suite.session import FluxSession

    real_case = FluxSession.case

    def case(self, stack, scenario, benchmark=None):
        if self.records:  # the second scenario: Ctrl-C
            raise KeyboardInterrupt
        return real_case(self, stack, scenario, benchmark)

    monkeypatch.setattr(FluxSession, "case", case)
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "latency.png").write_bytes(b"an older run's picture")
    result = cli("run", "--device", "cpu", "--scenarios", "64x64@2,64x64@1", "--rounds", "2",
                 "--report-dir", tmp_path / "report")
    assert result.returncode == 130 and "interrupted" in result.stderr  # 128 + SIGINT, as a shell says Ctrl-C
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [r["id"] for r in saved["records"]] == ["bf16-64x64@2"]
    assert saved["interrupted"] == "interrupted by KeyboardInterrupt: 1 of 2 cases finished"
    assert (tmp_path / "report" / "latency.png").read_bytes() != b"an older run's picture"


def test_table_keeps_gpus_and_weights_apart(tmp_path, cli):
    stages = {"step_median": 10.0}
    h100 = make_results(tmp_path / "h100.json", {"bf16-512x512@6": [0.66] * 3, "fast-512x512@6": [0.34] * 3},
                        stages_ms=stages)
    cpu = make_results(tmp_path / "cpu.json", {"bf16-512x512@6": [30.0] * 3}, gpu=None, fingerprint="tiny-x",
                       stages_ms=stages)
    result = cli("table", h100, cpu, "--json")
    rows = {(r["machine"], r["stack"]): r for r in json.loads(result.stdout)["rows"]}
    assert rows[("NVIDIA H100 80GB HBM3 / synthetic-x", "fast")]["speedup_vs_bf16"] == pytest.approx(0.66 / 0.34)
    assert rows[("CPU / tiny-x", "bf16")]["speedup_vs_bf16"] == 1.0
    assert "| machine |" in cli("table", h100, cpu).stdout


def test_table_shows_a_record_without_stages_with_no_step_time(tmp_path, cli):
    """stages_ms is optional in a valid results.json (the validator accepts a record without it):
    the row is shown with '-' for its step time, as for every other missing figure (was: a TypeError)."""
    run = make_results(tmp_path / "nostages.json", {"bf16-512x512@6": [0.66] * 3})
    table = cli("table", run)
    assert table.returncode == 0 and "Traceback" not in table.stderr
    assert "| 512x512@6 | bf16 | bf16 | 0.660 " in table.stdout and "| - | 1.00x |" in table.stdout
    assert json.loads(cli("table", run, "--json").stdout)["rows"][0]["step_ms"] is None
    physics = cli("table", run, "--kind", "physics")
    assert physics.returncode == 0 and "| 512x512@6 | bf16 | 0.660 | - |" in physics.stdout


def test_table_lists_a_case_that_raised_with_its_error_not_its_numbers(tmp_path, cli):
    """Seen on the H100: a case timed its rounds, then raised (a cuDNN version clash); its rounds
    are not a result, so the table names the error instead."""
    run = make_results(tmp_path / "te.json", {"fp8-512x512@6": [1.18] * 3, "bf16-512x512@6": [0.66] * 3},
                       errors={"fp8-512x512@6": "RuntimeError: cuDNN version incompatibility"},
                       stages_ms={"step_median": 10.0})
    result = cli("table", run)
    assert "| 512x512@6 | bf16 |" in result.stdout and "| 512x512@6 | fp8 | fp8 | 1.180" not in result.stdout
    assert "| 512x512@6 | fp8 | fp8 | failed: RuntimeError: cuDNN version incompatibility | te |" in result.stdout
    rows = json.loads(cli("table", run, "--json").stdout)
    assert [r["stack"] for r in rows["rows"]] == ["bf16"] and rows["not_run"][0]["reason"].startswith("failed:")


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`flux-perf table ... | head`: once the reader has gone, the command stops quietly (141, as a
    shell reports SIGPIPE) instead of a BrokenPipeError traceback."""
    import os
    import subprocess
    import sys

    from helpers import ROOT

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-m", "flux_perf", "stacks"], stdout=write, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=ROOT, timeout=300)
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("command", [("run",), ("baselines", "update")])
def test_the_telemetry_interval_reaches_the_measure_settings_of_every_measuring_command(tmp_path, command, capsys):
    """`--telemetry-interval`, as pytest's `--flux-telemetry-interval`, for the commands that measure."""
    from flux_perf.cli import build_parser
    from flux_perf.commands.shared import scenarios_of, suite

    parser = build_parser()
    args = parser.parse_args([*command, "--device", "cpu", "--telemetry-interval", "0.5",
                              "--report-dir", str(tmp_path / "report")])
    assert suite(args, stacks="bf16", scenarios=scenarios_of(args)).measure.telemetry_interval_s == 0.5
    default = parser.parse_args([*command, "--device", "cpu", "--report-dir", str(tmp_path / "report")])
    assert suite(default, stacks="bf16", scenarios=scenarios_of(default)).measure.telemetry_interval_s == 0.05
    with pytest.raises(SystemExit):
        parser.parse_args([*command, "--telemetry-interval", "0"])
    assert "--telemetry-interval: '0' is not a positive number of seconds" in capsys.readouterr().err


def test_calibrate_takes_no_telemetry_interval_since_it_times_no_rounds(capsys):
    from flux_perf.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["calibrate", "--telemetry-interval", "0.5"])
    assert "unrecognized arguments: --telemetry-interval" in capsys.readouterr().err
