"""The commands the docs tell a reader to type, kept runnable: every `flux-perf SUBCOMMAND ...`
in README.md and docs/*.md (fenced blocks and inline code; also an inline span that starts with a
subcommand and an option, `calibrate --write`) names a subcommand the real parser has, only
options that subcommand accepts and, for an option with fixed choices, one of them; and every
`--flux-*` option the docs name is one the pytest plugin registers. Options come and go (calibrate
lost --rounds, --report-dir and --telemetry-interval): a doc that still names one sends its reader
to an argparse error. The sibling of test_layout.py's check on the source paths the docs name.
docs/results/ holds records as they were and is not read."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Commands a doc names on purpose though the parser refuses them, as written (the words after the
# program) -> why. Narrow on purpose: the same option elsewhere in the file is still checked, and an
# entry no longer needed fails the test.
ALLOWED: dict[tuple[str, str], str] = {
    ("docs/reliability.md", "calibrate --rounds 5"):
        "the bad-input row shows calibrate refusing --rounds since 8a496c0 (`unrecognized arguments`, exit 2)",
    ("docs/reliability.md", "calibrate --report-dir D"):
        "the bad-input row shows calibrate refusing --report-dir since 8a496c0 (`unrecognized arguments`, exit 2)",
}

# `flux-perf SUB` or `python3 -m flux_perf SUB` (the same parser); not flux_perf.model.checkpoint.
_PROGRAM = re.compile(r"(?<![\w./-])(?:flux-perf|python3? -m flux_perf)(?![\w.-])")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
_FLUX_OPTION = re.compile(r"(?<![\w-])--flux-[a-z0-9][a-z0-9-]*[a-z0-9]")
_OPTION = re.compile(r"[\[(]*(--[a-z0-9][a-z0-9-]*[a-z0-9])(?:=(.*))?")  # `[--write]`, `--stacks=x`, `--write,`
_QUOTE = "\x00\x00"  # an escaped backtick inside a span, kept two characters long
_CLOSERS = {"(": ")", "{": "}"}
_BREAKS = "|;&<>)}`\x00"


def _snippets(text: str):
    """(line, code) for each line of a fenced block (backslash continuations joined, numbered by
    their first line) and each inline code span; blocks are blanked before spans are looked for."""
    lines = text.split("\n")
    prose, fence, pending = list(lines), None, None
    for number, line in enumerate(lines, 1):
        if fence is None:
            if opening := _FENCE.match(line):
                fence, prose[number - 1] = opening.group(1), ""
            continue
        prose[number - 1] = ""
        if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            fence = None
            continue
        start, code = pending or (number, "")
        code += line
        if code.endswith("\\"):
            pending = (start, code[:-1] + " ")
            continue
        pending = None
        yield start, code
    # A table cell quotes a command inside a message as \`...\`: those backticks are text, not spans.
    text = "\n".join(prose).replace("\\`", _QUOTE)
    for paragraph in re.finditer(r"(?:[^\n]|\n(?!\s*\n))+", text):  # a span never crosses a blank line
        for span in _SPAN.finditer(paragraph.group(0)):
            line = text.count("\n", 0, paragraph.start() + span.start(2)) + 1
            yield line, span.group(2).replace("\\\n", " ").replace("\n", " ")


def _words(command: str) -> list[str]:
    """Shell words up to the first operator (| ; & && || > < # a backtick, or an unmatched closing
    bracket, as when the command sits in `$(...)`). Quotes are removed; `$VAR`, `$(...)` and
    `{a,b}` stay inside their word, an opaque value to the checks."""
    words, word, depth, i = [], "", [], 0
    while i < len(command):
        char = command[i]
        if char in "'\"":
            end = command.find(char, i + 1)
            end = len(command) if end < 0 else end
            word += command[i + 1:end]
            i = end + 1
            continue
        if depth:
            word += char
            if char == depth[-1]:
                depth.pop()
            elif char == "{" or (char == "(" and word.endswith("$(")):
                depth.append(_CLOSERS[char])
        elif char == "{" or (char == "(" and word[-1:] in ("$", "<")):
            word += char
            depth.append(_CLOSERS[char])
        elif char.isspace():
            words, word = (words + [word] if word else words), ""
        elif char in _BREAKS or (char == "#" and not word):
            break
        elif char == "\\" and i + 1 < len(command):
            word += command[i + 1]
            i += 1
        else:
            word += char
        i += 1
    return words + [word] if word and not depth else words


# What may stand before the program where it is the command typed: a prompt, VAR=value, a wrapper.
_LEAD = re.compile(r"(?:\$|[A-Z_][A-Z0-9_]*=\S*|env|time|nohup|timeout(?: -\S+)* \S+)?"
                   r"(?: (?:[A-Z_][A-Z0-9_]*=\S*|env|time|nohup))*")


def _typed(code: str, start: int) -> bool:
    """The program starts a command (`flux-perf ...`, `$ CI=true flux-perf ...`, after `&&`, in
    `$(...)`), rather than being a word of a quoted message (`this flux-perf reads versions 1 and 2`)."""
    return bool(_LEAD.fullmatch(re.split(r"\$\(|[|;&`\x00]", code[:start])[-1].strip()))


def commands(docs=None, parser=None):
    """(doc, line, words after the program, typed) for every flux-perf command in the docs, and,
    given the parser, for each span or line that starts with a subcommand and an option or action
    (`ab --json F`, `baselines migrate rel`): the docs' short form, the program left out."""
    subcommands = _subparsers(parser) if parser else {}
    short = "|".join(rf"{re.escape(name)}\s+(?:--[a-z]|(?:{'|'.join(_subparsers(sub)) or '(?!)'})\b)"
                     for name, sub in subcommands.items())
    bare = re.compile(rf"\s*(?:{short or '(?!)'})")
    for doc in docs or DOCS:
        name = doc.relative_to(ROOT).as_posix() if doc.is_relative_to(ROOT) else doc.name
        for line, code in _snippets(doc.read_text()):
            if not _PROGRAM.search(code) and bare.match(code):
                yield name, line, _words(code), False
            for program in _PROGRAM.finditer(code):
                if words := _words(code[program.end():]):
                    yield name, line, words, _typed(code, program.start())


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)), {})


def _refused(parser: argparse.ArgumentParser, words: list[str], typed: bool):
    """What the parser would refuse in the command: a subcommand (or baselines action) it lacks,
    an option the subcommand does not accept, a value outside an option's choices. A word after the
    program that is no subcommand counts only where the program was typed as a command and the word
    could be one: `flux-perf SUBCOMMAND` and `flux-perf ...` are placeholders."""
    chosen, path, rest = parser, [], list(words)
    while (choices := _subparsers(chosen)) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        if name not in choices:
            if (path or typed) and re.fullmatch(r"[a-z][a-z-]*", name):
                yield f"no subcommand `{' '.join([*path, name])}`"
            return
        chosen, path = choices[name], [*path, name]
    options = {option: action for action in chosen._actions for option in action.option_strings}
    for position, word in enumerate(rest):
        if word == "--":  # the end of the options
            return
        if not (match := _OPTION.fullmatch(word.rstrip(",.;:]")) or _OPTION.match(word)):
            continue
        option, value = match.group(1), match.group(2)
        if option not in options:
            yield f"`{' '.join(path)}` has no option {option}"
            continue
        choices = options[option].choices
        value = value if value is not None else (rest[position + 1] if position + 1 < len(rest) else None)
        if choices and value and re.fullmatch(r"[a-z][a-z0-9-]*", value) and value not in choices:
            yield f"`{' '.join(path)} {option}` takes {', '.join(choices)}, not {value}"


def command_problems(parser, docs=None) -> tuple[list[str], set]:
    """'file:line: problem [command]' for each refused command, and the ALLOWED entries used."""
    problems, used = [], set()
    for doc, line, words, typed in commands(docs, parser):
        for problem in _refused(parser, words, typed):
            if (doc, " ".join(words)) in ALLOWED:
                used.add((doc, " ".join(words)))
            else:
                problems.append(f"{doc}:{line}: {problem}  [flux-perf {' '.join(words)}]")
    return problems, used


class _Recorder:
    """Stands in for pytest's parser: add_options only calls getgroup(...).addoption(...)."""

    def __init__(self):
        self.names: set[str] = set()

    def getgroup(self, *args, **kwargs):
        return self

    def addoption(self, *names, **kwargs):
        self.names.update(names)


def flux_option_problems(registered, docs=None) -> list[str]:
    return [f"{doc.name if docs else doc.relative_to(ROOT).as_posix()}:{number}: {option} is not an option "
            "the pytest plugin registers" for doc in docs or DOCS
            for number, line in enumerate(doc.read_text().splitlines(), 1)
            for option in _FLUX_OPTION.findall(line) if option not in registered]


@pytest.fixture(scope="module")
def parser():
    from flux_perf.cli import build_parser

    return build_parser()


@pytest.fixture(scope="module")
def registered():
    from flux_perf.plugin.options import add_options

    recorder = _Recorder()
    add_options(recorder)
    assert {"--flux-rounds", "--flux-report-dir"} <= recorder.names, recorder.names
    return recorder.names


def test_the_docs_name_flux_perf_commands(parser):
    found = list(commands(None, parser))
    seen = {words[0] for _, _, words, _ in found}
    # The docs write every subcommand; far fewer seen means the extraction broke, not the docs.
    assert len(found) > 100 and {"run", "calibrate", "ab", "ab-pairs", "baselines", "table"} <= seen, sorted(seen)


def test_every_doc_command_is_one_the_parser_accepts(parser):
    problems, used = command_problems(parser)
    assert not problems, "docs name commands `flux-perf` refuses:\n" + "\n".join(problems)
    assert used == set(ALLOWED), f"ALLOWED entries no longer needed: {sorted(set(ALLOWED) - used)}"


def test_every_flux_option_the_docs_name_is_registered(registered):
    problems = flux_option_problems(registered)
    assert not problems, "docs name --flux-* options the pytest plugin lacks:\n" + "\n".join(problems)


def test_stale_commands_are_found_in_every_form_the_docs_write(parser, registered, tmp_path):
    doc = tmp_path / "probe.md"
    doc.write_text(
        "Run `flux-perf calibrate --rounds 5 --write` or `calibrate --report-dir D`; `no budgets.toml (flux-perf is\n"
        "not running from a checkout)` and `flux-perf SUBCOMMAND --help` are prose, `flux-perf summary` is not.\n"
        "```bash\n"
        "flux-perf ab --base $PWD --head $PWD \\\n"
        "  --scenarios {512x512@6,1024x1024@8} --telemetry-interval 0.1 | tee ab.log && flux-perf table --bogus\n"
        "$ CI=true python3 -m flux_perf baselines update --calibrate never --stacks \"$(cat s)\" > out\n"
        "flux-perf ab-pairs $(ls r/ab-*.json | grep -v x) --runs 10 --family 4\n"
        "```\n"
        "Table cell: `record it with \\`flux-perf baselines update --force --stacks S\\``, with `--flux-roundz 3`.\n")
    problems, _ = command_problems(parser, [doc])
    assert problems == [
        "probe.md:4: `ab` has no option --telemetry-interval  [flux-perf ab --base $PWD --head $PWD --scenarios "
        "{512x512@6,1024x1024@8} --telemetry-interval 0.1]",
        "probe.md:4: `table` has no option --bogus  [flux-perf table --bogus]",
        "probe.md:6: `baselines update --calibrate` takes missing, all, none, not never  "
        "[flux-perf baselines update --calibrate never --stacks $(cat s)]",
        "probe.md:1: `calibrate` has no option --rounds  [flux-perf calibrate --rounds 5 --write]",
        "probe.md:1: `calibrate` has no option --report-dir  [flux-perf calibrate --report-dir D]",
        "probe.md:2: no subcommand `summary`  [flux-perf summary]",
    ], problems
    assert flux_option_problems(registered, [doc]) == [
        "probe.md:9: --flux-roundz is not an option the pytest plugin registers"]
