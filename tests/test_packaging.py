"""The package installs as users install it: `pip install -e .` gives the console scripts, and
pyproject's dependencies are requirements.txt's."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _reqs(lines):
    out = {}
    for line in lines:
        line = line.split("#")[0].strip().strip('",')
        if not line or line.startswith("-"):
            continue
        m = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", line)
        out[m.group(1).lower().replace("_", "-")] = m.group(2).replace(" ", "")
    return out


def test_pyproject_dependencies_match_requirements():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = _reqs(project["dependencies"])
    reqs = _reqs((ROOT / "requirements.txt").read_text().splitlines())
    test_only = {k: reqs.pop(k) for k in ("pytest", "playwright")}  # pyproject's test extra
    assert deps == reqs
    assert _reqs(project["optional-dependencies"]["test"]) == test_only
    assert set(project["scripts"]) == {"pssr-step1", "pssr-step2", "pssr-eval",
                                        "pssr-app"}


@pytest.mark.parametrize("script, marker", [("pssr-step1", "--timestep_draft_list"),
                                            ("pssr-step2", "--consistent_dir"),
                                            ("pssr-eval", "--metrics"),
                                            ("pssr-app", "--max_upload_mb")])
def test_console_scripts_installed(script, marker, tmp_path):
    """Installed by `pip install --no-deps -e .` (.ci/run does it); run from another folder."""
    exe = Path(sys.executable).parent / script
    assert exe.exists(), f"{exe} missing: run `pip install --no-deps -e .`"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert marker in r.stdout


def _package_dirs():
    return sorted(p.parent for p in (ROOT / "Wan_SR").rglob("__init__.py"))


def test_every_package_folder_is_installed():
    """pyproject's package list finds every folder of Wan_SR that holds Python files (a folder
    without __init__.py would be left out of the wheel)."""
    from setuptools import find_packages

    found = set(find_packages(str(ROOT), include=["Wan_SR*"]))
    folders = {".".join(d.relative_to(ROOT).parts) for d in (ROOT / "Wan_SR").rglob("*")
               if d.is_dir() and any(d.glob("*.py"))}
    assert folders <= found, sorted(folders - found)
    assert {"Wan_SR.data.video_io", "Wan_SR.testing"} <= found


def test_every_package_says_what_it_holds():
    """Each package's docstring names what it holds, not just the project."""
    import ast

    for d in _package_dirs():
        doc = ast.get_docstring(ast.parse((d / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 20, f"{d.relative_to(ROOT)}: {doc!r}"
