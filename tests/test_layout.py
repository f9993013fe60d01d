"""The package's imports run one way (docs/method.md, "Code layout"):

    cli, tools -> app -> (runs | testing) -> training -> (sampling | fusion | metrics)
    -> (models | data) -> core

``testing`` (fixtures: random weights in the official file layouts) is imported by tests,
benchmarks and ``tools`` only, never by the code that restores, trains or scores.
A module may import from its own package or from a lower layer, never from a higher one or a
sibling of its layer, and no two modules import each other, directly or through others.
Checked on the source with ast, so lazy imports inside functions count too."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "Wan_SR"
LAYER = {"core": 0, "models": 1, "data": 1, "sampling": 2, "fusion": 2, "metrics": 2,
         "training": 3, "runs": 4, "testing": 4, "app": 5, "cli": 6, "tools": 6}
# The packages that may import Wan_SR.testing besides itself.
TESTING_USERS = {"tools"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Wan_SR modules imported by ``path`` (relative imports resolved), anywhere in the file."""
    mod = module_name(path)
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "Wan_SR"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "Wan_SR":
                continue
            # "from Wan_SR.x import y" may import the module Wan_SR.x.y
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if _exists(sub) else target)
    return out


def _exists(mod: str) -> bool:
    p = ROOT / Path(*mod.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def package_of(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PKG.rglob("*.py")}


def test_every_package_has_a_layer():
    pkgs = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    assert pkgs <= set(LAYER), f"packages without a layer: {pkgs - set(LAYER)}"


def test_no_upward_or_sideways_imports():
    bad = []
    for mod, deps in graph().items():
        src = package_of(mod)
        if not src:
            continue
        for dep in deps:
            dst = package_of(dep)
            if not dst or dst == src:
                continue
            if LAYER[dst] >= LAYER[src]:
                bad.append(f"{mod} -> {dep} (layer {src}={LAYER[src]} may not use {dst}={LAYER[dst]})")
    assert not bad, "\n".join(bad)


def test_production_code_never_imports_the_fixtures():
    bad = [f"{mod} -> {dep}" for mod, deps in graph().items() for dep in deps
           if package_of(dep) == "testing"
           and package_of(mod) not in TESTING_USERS | {"testing"}]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    g = graph()
    g = {m: {d for d in deps if d in g and d != m and not m.startswith(d + ".")}
         for m, deps in g.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in g[m]:
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("bad_src, expect", [
    ("from Wan_SR.cli.common import HelpFormatter\n", "upward"),
    ("from ..runs import step1\n", "upward"),
])
def test_checker_catches_an_upward_import(tmp_path, monkeypatch, bad_src, expect):
    """The checker itself can fail: a fake module in Wan_SR/fusion importing upwards is caught."""
    fake = PKG / "fusion" / "_layout_probe_tmp.py"
    fake.write_text(bad_src, encoding="utf-8")
    try:
        with pytest.raises(AssertionError, match="fusion._layout_probe_tmp"):
            test_no_upward_or_sideways_imports()
    finally:
        fake.unlink()


def test_checker_catches_a_fixture_import():
    fake = PKG / "cli" / "_fixture_probe_tmp.py"
    fake.write_text("def f():\n    from Wan_SR.testing import checkpoints\n", encoding="utf-8")
    try:
        with pytest.raises(AssertionError, match="cli._fixture_probe_tmp -> Wan_SR.testing"):
            test_production_code_never_imports_the_fixtures()
    finally:
        fake.unlink()


def test_checker_catches_a_cycle():
    a, b = PKG / "core" / "_cycle_a_tmp.py", PKG / "core" / "_cycle_b_tmp.py"
    a.write_text("from Wan_SR.core import _cycle_b_tmp\n")
    b.write_text("def f():\n    from . import _cycle_a_tmp\n")
    try:
        with pytest.raises(AssertionError, match="_cycle_a_tmp"):
            test_no_import_cycles()
    finally:
        a.unlink()
        b.unlink()


# ----------------------------------------------------------------------------- sizes and imports

MAX_FUNCTION_LINES, MAX_MODULE_LINES = 90, 600
# modules whose lazy imports keep `--help` fast (the command line and the options it reads)
HELP_PATH = ("Wan_SR.cli", "Wan_SR.tools", "Wan_SR.training.options")


def production_files():
    return [p for p in PKG.rglob("*.py") if "testing" not in p.relative_to(PKG).parts]


def long_functions(files) -> list:
    out = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    return out


def test_functions_and_modules_stay_readable():
    """No function over 90 lines (nested ones count in their parent) and no module over 600
    lines in the package (the fixtures of Wan_SR/testing aside)."""
    files = production_files()
    big = [f"{p.relative_to(ROOT)}: {n} lines" for p in files
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not big and not long_functions(files), "\n".join(big + long_functions(files))


def test_the_size_check_can_fail():
    fake = PKG / "core" / "_long_probe_tmp.py"
    fake.write_text("def f():\n" + "    x = 1\n" * 95)
    try:
        with pytest.raises(AssertionError, match="_long_probe_tmp.py:1 f: 96 lines"):
            test_functions_and_modules_stay_readable()
    finally:
        fake.unlink()


def lazy_imports_without_reason(files) -> list:
    """Imports inside function bodies, outside the command-line modules, with no comment on the
    line before them or on their own line saying why they are there."""
    out = []
    for path in files:
        if module_name(path).startswith(HELP_PATH):
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    j = node.lineno - 2  # the comment may sit above a group of imports
                    while lines[j].strip().startswith(("import ", "from ")):
                        j -= 1
                    if "#" not in lines[node.lineno - 1] and "#" not in lines[j]:
                        out.append(f"{path.relative_to(ROOT)}:{node.lineno} in {fn.name}")
    return out


def test_imports_sit_at_module_top():
    """Imports are at the top of each module; only the command line (whose `--help` must not
    load torch) keeps them in functions, and anything else says why in a comment."""
    assert not lazy_imports_without_reason(production_files()), \
        "\n".join(lazy_imports_without_reason(production_files()))


def test_help_loads_no_torch():
    import subprocess
    import sys

    code = ("import sys\n"
            "for m in ('step1', 'step2', 'evaluate', 'train_base', 'train_draft', 'app'):\n"
            "    __import__(f'Wan_SR.cli.{m}', fromlist=['x']).build_parser().format_help()\n"
            "heavy = [m for m in ('torch', 'gradio') if m in sys.modules]\n"
            "assert not heavy, (heavy, sorted(k for k in sys.modules if 'Wan_SR' in k))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_import_check_can_fail():
    fake = PKG / "core" / "_lazy_probe_tmp.py"
    fake.write_text("def f():\n    import json\n    return json\n")
    try:
        with pytest.raises(AssertionError, match="_lazy_probe_tmp.py:2 in f"):
            test_imports_sit_at_module_top()
    finally:
        fake.unlink()


def test_nothing_points_outside_the_repository():
    """Users have the repository only: no file may cite the steering documents beside it."""
    spec = "SP" + "EC"
    needles = ("../" + "shared", "shared" + "/", spec + ".md", spec + " §", "TRAINING_" + "RECIPE")
    hits = []
    files = [p for ext in ("*.py", "*.md", "*.yml", "*.yaml", "*.sh", "*.toml", "*.txt")
             for p in ROOT.rglob(ext)]
    for p in files:
        if ".venv" in p.parts or ".git" in p.parts or "site-packages" in p.parts:
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        for needle in needles:
            if needle in text:
                hits.append(f"{p.relative_to(ROOT)}: {needle}")
    assert not hits, "\n".join(hits)
