"""What a results.json must hold before `compare` and `table` trust it: the keys of a run and of
each record, of the types flux-perf writes; timings that are positive, finite seconds; one record
per case. Every problem is one message in one style:

    FILE: record 2 (bf16-512x512@6): key 'fingerprint' is null, expected a string; <what to do>
"""

from __future__ import annotations

import dataclasses
import re

from ..store.files import non_negative_number, positive_number

ADVICE = "use the results.json a flux-perf run wrote (this one was edited or is not flux-perf's)"
_NAMES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "dict": (dict,), "list": (list,),
          "None": (type(None),)}
_SAID = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false", "dict": "an object",
         "list": "a list", "None": "null"}
# Seconds that may be 0 (an eager stack compiles nothing) but never negative; every timed figure
# of the rounds must be above 0.
_DURATIONS = ("build_s", "encode_prompt_s", "apply_s", "first_call_s", "compile_s")
_WALL_KEYS = ("median", "ci_low", "ci_high")


class ResultsError(ValueError):
    """A results.json that is missing, not JSON, of an unknown schema, or not flux-perf's."""


def bad(where: str, key: str, problem: str) -> str:
    return f"{where}: key '{key}' {problem}; {ADVICE}"


def _shown(value) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _json_name(name: str) -> str:
    """The JSON type of an annotation's name: a typed record (a class) is an object, a tuple a list."""
    return "dict" if name[:1].isupper() and name != "None" else "list" if name == "tuple" else name


def type_problem(value, annotation: str) -> str | None:
    """None when `value` has a type the dataclass annotation (`str | None`, `list[float]`) allows."""
    names = [_json_name(part.strip().split("[")[0]) for part in annotation.split("|")]
    kinds = tuple(kind for name in names for kind in _NAMES.get(name, (object,)))
    if isinstance(value, bool) and "bool" not in names and object not in kinds:
        kinds = ()  # JSON true is no number
    if isinstance(value, kinds):
        return None
    expected = " or ".join(_SAID.get(name, name) for name in names)
    return f"is {_shown(value)}, expected {expected}"


def timing_problems(data: dict, where: str) -> list[str]:
    """Timings a run cannot have measured: negative, zero (where a round took time), NaN, infinite."""
    wrong = "timings are positive, finite seconds"
    problems = [bad(where, "wall_samples_s", f"holds {_shown(x)}: {wrong}")
                for x in data.get("wall_samples_s") or [] if not positive_number(x)][:1]
    wall = data.get("wall_s")
    if isinstance(wall, dict):
        problems += [bad(where, f"wall_s.{key}", f"is {_shown(wall.get(key))}: {wrong}")
                     for key in _WALL_KEYS if not positive_number(wall.get(key))]
    stages = data.get("stages_ms")
    if isinstance(stages, dict):
        problems += [bad(where, f"stages_ms.{key}", f"is {_shown(value)}: {wrong}")
                     for key, value in stages.items() if value is not None and not positive_number(value)]
    problems += [bad(where, key, f"is {_shown(data[key])}: a duration is never negative")
                 for key in _DURATIONS if data.get(key) is not None and not non_negative_number(data[key])]
    return problems


def fields_problem(data, where: str, key: str, cls) -> str | None:
    """The first problem of the object at `key` of a record read as dataclass `cls`: a field without a
    default missing, a value (or an item of a tuple) of another type than the field's annotation."""
    if not isinstance(data, dict):
        return bad(where, key, type_problem(data, "dict"))
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                return bad(where, f"{key}.{f.name}", "is missing")
            continue
        annotation = str(f.type)  # text: every class read so postpones its annotations
        problem = type_problem(data[f.name], annotation)
        if problem:
            return bad(where, f"{key}.{f.name}", problem)
        items = re.fullmatch(r"tuple\[(.+), \.\.\.\]", annotation)
        for i, item in enumerate(data[f.name] if items else []):
            problem = type_problem(item, items[1])
            if problem:
                return bad(where, f"{key}.{f.name}.{i}", problem)
    return None


def record_problem(data, where: str, fields: dict[str, tuple[str, bool]]) -> str | None:
    """The first problem of one record, or None; `fields` maps each key to (annotation, required)."""
    if not isinstance(data, dict):
        return f"{where} is {_shown(data)}, not a record object; {ADVICE}"
    case = data.get("id")
    if isinstance(case, str):
        where = f"{where} ({case})"
    for key, (annotation, required) in fields.items():
        if key not in data:
            if required:
                return bad(where, key, "is missing")
            continue
        problem = type_problem(data[key], annotation)
        if problem:
            return bad(where, key, problem)
    if not isinstance(data["scenario"].get("id"), str):
        return bad(where, "scenario.id", type_problem(data["scenario"].get("id"), "str") or "is not a string")
    problems = timing_problems(data, where)
    return problems[0] if problems else None


def run_problem(payload: dict, path) -> str | None:
    """The first problem of the run's own keys (the machine, what could not run), or None."""
    machine = payload.get("machine")
    if not isinstance(machine, dict):
        return bad(str(path), "machine", type_problem(machine, "dict") if "machine" in payload else "is missing")
    model = machine.get("model")
    if not isinstance(model, dict):
        return bad(str(path), "machine.model", type_problem(model, "dict") if "model" in machine else "is missing")
    for key, value, annotation in (("machine.model.fingerprint", model.get("fingerprint"), "str"),
                                   ("machine.gpu_name", machine.get("gpu_name"), "str | None"),
                                   ("skipped", payload.get("skipped", []), "list | None"),
                                   ("interrupted", payload.get("interrupted"), "str | None"),
                                   ("not_selected", payload.get("not_selected", []), "list | None")):
        problem = type_problem(value, annotation)
        if problem:
            return bad(str(path), key, problem)
    for i, case in enumerate(payload.get("not_selected") or []):
        if not isinstance(case, str):
            return f"{path}: not_selected {i} is {_shown(case)}, not a case id; {ADVICE}"
    for i, skip in enumerate(payload.get("skipped") or []):
        if not isinstance(skip, dict):
            return f"{path}: skipped {i} is {_shown(skip)}, not an object; {ADVICE}"
        for key in ("stack", "scenario"):
            problem = type_problem(skip.get(key), "str")
            if problem:
                return bad(f"{path}: skipped {i}", key, problem)
    return None


def duplicate_problem(ids: list[str], path) -> str | None:
    """A results.json holds one record per case: a second one would be dropped or counted twice."""
    first: dict[str, int] = {}
    for i, case in enumerate(ids):
        if case in first:
            return (f"{path}: case id '{case}' appears twice (records {first[case]} and {i}); a run records each "
                    "case once: keep one of them, or compare the runs as separate files")
        first[case] = i
    return None
