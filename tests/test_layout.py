"""The shape of the package, kept: layers as folders whose imports only run downward, modules a
reader can hold in mind (at most 350 lines), functions at most 60 lines."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flux_perf"
# Lowest first: a layer may import the layers before it, never one after it. suite runs the cases
# for both front ends, the pytest plugin and the command line (commands, with the A/B gate under
# it). The modules at the top (cli, quiet, __main__) may import any.
LAYERS = ("model", "components", "store", "instrument", "gate", "report", "suite", "ab", "commands", "plugin")


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _imports(path: Path):
    """(line, imported flux_perf module) for every import in the file, inside functions too."""
    package = ["flux_perf", *path.relative_to(PACKAGE).parent.parts]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):  # import flux_perf.report.summary
            yield from ((node.lineno, alias.name) for alias in node.names if alias.name.startswith("flux_perf"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                module = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("flux_perf"):
                module = node.module
            else:
                continue
            # `from .. import report` imports the layer itself: each name may be a module
            yield from ((node.lineno, f"{module}.{alias.name}") for alias in node.names)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_downward_only(path):
    module = ".".join(["flux_perf", *path.relative_to(PACKAGE).with_suffix("").parts])
    own = _layer(module)
    if own is None:
        return
    upward = [f"line {line}: {target}" for line, target in _imports(path)
              if (layer := _layer(target)) is not None and layer > own]
    assert not upward, f"{module} ({LAYERS[own]}) imports a higher layer: {upward}"


def test_every_spelling_of_an_upward_import_is_seen(tmp_path, monkeypatch):
    folder = tmp_path / "flux_perf" / "model"
    folder.mkdir(parents=True)
    probe = folder / "probe.py"
    probe.write_text("import flux_perf.report.summary\nfrom .. import report\nfrom flux_perf import gate\n"
                     "from ..store.entries import SCHEMA_KEY\n")
    monkeypatch.setitem(globals(), "PACKAGE", tmp_path / "flux_perf")
    targets = [t for _, t in _imports(probe)]
    assert [_layer(t) for t in targets] == [5, 5, 4, 2]  # report, report, gate, store


def test_modules_and_functions_stay_small():
    too_long = []
    for path in _modules():
        text = path.read_text()
        if len(text.splitlines()) > 350:
            too_long.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}() "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long


def _private_imports(path: Path):
    """(line, name) for each underscore-private name imported from another flux_perf module."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("flux_perf")):
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names
                        if alias.name.startswith("_") and not alias.name.startswith("__"))


def test_no_module_imports_another_modules_private_names():
    # A leading underscore says "free to change": a module that needs a name gets a public one.
    found = [f"{path.relative_to(PACKAGE)}:{line} {name}" for path in _modules()
             for line, name in _private_imports(path)]
    assert not found, found


def test_every_source_path_the_docs_name_exists():
    """A newcomer follows README and docs/ to the code: a path they name that moved (as
    flux_perf/ab_rule.py did when the layers became folders) sends them nowhere."""
    import re

    root = PACKAGE.parent
    named = {(doc.name, path) for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]
             for path in re.findall(r"(?<![\w/.])((?:flux_perf|tests|tools)/[\w/.-]+\.(?:py|sh|md|toml))", doc.read_text())}
    assert named, "no source path found in the docs: the pattern no longer matches how they name files"
    assert not [(doc, path) for doc, path in sorted(named) if not (root / path).exists()]
