"""What a CI run costs on a clean clone, for each of some commits, in ONE run: its wall time, the
tests' time, the most disk it adds at any moment (the venv, pip's temporary files, what the tests
write) and what of that the tests' temporary folder holds.

Each commit is cloned fresh into ``--work`` and ``bash .ci/run`` runs there with ``TMPDIR`` inside
the clone; the filesystem's used bytes are sampled every second (the machine should be otherwise
idle: the number is the growth over the start) and the temporary folder every five. The clone is
removed afterwards.

    python benchmarks/ci/footprint.py --commits 886872d,HEAD
    python benchmarks/ci/footprint.py --quick   # tests/test_train_faults.py only, this .venv
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks.common import ROOT, parse, parser, record, save  # noqa: E402

NAME = "ci/footprint"
MIB = 1 << 20


def folder_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass  # removed while walking
    return total


class DiskPeaks(threading.Thread):
    """The largest growth of the filesystem holding ``work`` and the largest size of ``tmp``
    while running."""

    def __init__(self, work: Path, tmp: Path):
        super().__init__(daemon=True)
        self.work, self.tmp = work, tmp
        self.start_used = shutil.disk_usage(work).used
        self.disk = self.tmp_peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self.stop.wait(1.0):
            self.disk = max(self.disk, shutil.disk_usage(self.work).used - self.start_used)
            if tick % 5 == 0:
                self.tmp_peak = max(self.tmp_peak, folder_bytes(self.tmp))
            tick += 1


def tests_seconds(output: str) -> float | None:
    """The seconds pytest's last summary line gives ('... passed in 367.66s (0:06:07)')."""
    found = re.findall(r" in ([0-9.]+)s", output)
    return float(found[-1]) if found else None


def measure(commit: str, work: Path, quick: bool) -> dict:
    full = subprocess.run(["git", "rev-parse", commit], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    clone = Path(tempfile.mkdtemp(prefix="ci_footprint_", dir=work))
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "checkout", "-q", full], cwd=clone, check=True)
        tmp = clone / ".tmp"
        tmp.mkdir()
        command = ([str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", "-q",
                    "tests/test_train_faults.py"] if quick else ["bash", ".ci/run"])
        peaks = DiskPeaks(work, tmp)
        peaks.start()
        t0 = time.perf_counter()
        r = subprocess.run(command, cwd=clone, capture_output=True, text=True,
                           env=dict(os.environ, TMPDIR=str(tmp)))
        wall = time.perf_counter() - t0
        peaks.stop.set()
        peaks.join()
        venv = clone / ".venv"
        lines = (r.stdout + r.stderr).strip().splitlines()
        return {"commit": full, "command": " ".join(command), "exit_code": r.returncode,
                "wall_s": round(wall, 1), "tests_s": tests_seconds(r.stdout),
                "summary": lines[-1] if lines else "",
                "peak_disk_mib": round(peaks.disk / MIB),
                "peak_tmp_mib": round(peaks.tmp_peak / MIB),
                "venv_mib": round(folder_bytes(venv) / MIB) if venv.is_dir() else None}
    finally:
        shutil.rmtree(clone, ignore_errors=True)


def main(argv=None):
    p = parser(__doc__, repeats=1, unit="CI runs of each commit",
               quick="tests/test_train_faults.py with this checkout's .venv instead of .ci/run")
    p.add_argument("--commits", default="HEAD",
                   help="commits to measure, one after the other (default: HEAD)")
    p.add_argument("--work", default=tempfile.gettempdir(),
                   help="where the clones go (default: the temporary folder)")
    args = parse(p, argv)
    result = record(args, "cpu")
    result["runs"] = [measure(c, Path(args.work), args.quick)
                      for c in args.commits.split(",") for _ in range(args.repeats)]
    save(result, args, NAME)


if __name__ == "__main__":
    main()
