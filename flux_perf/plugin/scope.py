"""What the pytest plugin claims. Installing flux-perf registers its plugin in every pytest run
of the environment, so it acts only where it was asked for:

- a run that passes a `--flux-*` option or `-p flux_perf.plugin`, or a project whose conftest.py
  names the plugin in `pytest_plugins` (the flux-perf checkout does): every `h100` test is its own;
- anywhere else, only the tests that use its fixtures (`flux_session`, `flux_result`, ...) are.

A project's own `h100` tests are left alone: never skipped, and `-m h100` there needs no budgets.
Marker expressions are parsed as pytest parses them. Imports nothing heavy (no torch).
"""

from __future__ import annotations

import inspect
import itertools
import re
from pathlib import Path

MARKER = "h100"
PLUGIN = "flux_perf.plugin"
FIXTURES = frozenset({"flux_session", "flux_result", "flux_latency", "flux_case"})
# pytest's identifiers in -m expressions (_pytest/mark/expression.py), less its keywords.
_IDENT = re.compile(r"(?:\w|:|\+|-|\.|\[|\]|\\|/)+")
_KEYWORDS = {"and", "or", "not"}
_MAX_NAMES = 10  # 2**10 evaluations at most; a longer expression is judged on h100 alone


def marker_selects(markexpr: str | None, marker: str = MARKER) -> bool:
    """Whether `-m markexpr` selects tests because they carry `marker`: for some set of other
    markers, a test with `marker` is selected and the same test without it is not. So `h100`,
    `h100 or slow`, `h100 and fidelity` select it; `not(h100)`, `not  h100`, `h1000`, `not slow` do not."""
    if not markexpr or not markexpr.strip():
        return False
    from _pytest.mark.expression import Expression

    try:
        expression = Expression.compile(markexpr)
    except SyntaxError:
        return False  # pytest reports the bad expression itself
    others = sorted({n for n in _IDENT.findall(markexpr) if n not in _KEYWORDS and n != marker})[:_MAX_NAMES]

    def selected(present: set) -> bool:
        return expression.evaluate(lambda name, /, **kwargs: name in present)

    for size in range(len(others) + 1):
        for combo in itertools.combinations(others, size):
            if selected({marker, *combo}) and not selected(set(combo)):
                return True
    return False


def marker_declared(config, marker: str = MARKER) -> bool:
    """The project's own ini already declares the marker: flux-perf adds no second line for it."""
    return any(line.split(":")[0].split("(")[0].strip() == marker for line in config.getini("markers"))


def flux_options_given(config) -> bool:
    return any(str(arg).startswith("--flux-") for arg in config.invocation_params.args)


def plugin_named(config) -> bool:
    """`-p flux_perf.plugin` on the command line."""
    args = [str(a) for a in config.invocation_params.args]
    return any(a == "-p" and b == PLUGIN for a, b in zip(args, args[1:])) or f"-p{PLUGIN}" in args


def _names_plugin(module) -> bool:
    wanted = getattr(module, "pytest_plugins", ())
    return wanted == PLUGIN if isinstance(wanted, str) else PLUGIN in list(wanted or ())


def conftest_opted_in(config) -> bool:
    """A conftest.py loaded so far names the plugin in `pytest_plugins` (only the rootdir's may)."""
    return any(Path(getattr(plugin, "__file__", None) or "").name == "conftest.py" and _names_plugin(plugin)
               for plugin in config.pluginmanager.get_plugins())


def asked_for(config) -> bool:
    return flux_options_given(config) or plugin_named(config) or conftest_opted_in(config)


def own_item(item, everything: bool) -> bool:
    """Whether flux-perf claims this test: every test when it was asked for, else those using its fixtures."""
    return everything or bool(FIXTURES & set(getattr(item, "fixturenames", ())))


def item_case(item):
    """The (stack, scenario) this test item measures, or None for a test outside the cases."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("flux_case") if callspec is not None else None


def item_case_id(item) -> str | None:
    """The id of the case this test item measures (`bf16-512x512@6`, as its record's), or None."""
    case = item_case(item)
    return f"{case[0].name}-{case[1].id}" if case else None


def selected_cases(items) -> int:
    """How many (stack, scenario) cases these test items measure: after -k, -m, --deselect and
    the rest chose, not every case the options name."""
    return len({item_case_id(item) for item in items} - {None})


def left_out_cases(deselected, selected) -> list[str]:
    """The ids of the cases whose every test item -k, -m, --deselect or --lf left out, in run order:
    a case with one selected test (`-k latency` keeps the latency test) still runs and is judged."""
    kept = {item_case_id(item) for item in selected}
    return [case for case in dict.fromkeys(map(item_case_id, deselected)) if case and case not in kept]


def project_root(config) -> Path:
    """pytest's rootdir as pytest would pick it knowing flux-perf's options. Plugins' options are
    unknown when pytest picks it, so in `--flux-report-dir DIR` it takes DIR for a test path and
    the rootdir (and the ini file) from there; the baselines must not follow."""
    root = Path(str(config.rootpath))
    try:
        from _pytest.config.findpaths import determine_setup

        known = {"inifile": config.option.inifilename, "override_ini": config.option.override_ini,
                 "args": list(getattr(config.option, "file_or_dir", None) or []),
                 "rootdir_cmd_arg": config.option.rootdir or None,
                 "invocation_dir": Path(str(config.invocation_params.dir))}
        wanted = inspect.signature(determine_setup).parameters
        return Path(determine_setup(**{k: v for k, v in known.items() if k in wanted})[0])
    except Exception:  # noqa: BLE001 - another pytest's internals: its own choice stands
        return root


def rootdir_note(config, baselines_dir: Path) -> str | None:
    """A line for the header when pytest's rootdir came from an option's value; `baselines_dir` the
    folder the run reads (the project's baselines/, or --flux-baselines-dir's)."""
    if project_root(config) == Path(str(config.rootpath)):
        return None
    return (f"flux-perf: pytest took its rootdir {config.rootpath} from an option's value (its ini file was not "
            f"read); baselines are looked up from {baselines_dir}. Write options with '=' (--flux-report-dir=DIR) "
            "to avoid it")
