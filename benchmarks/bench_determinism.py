"""Do two runs of step 1 give the same bits? One clip, real-size random checkpoints, on one GPU:
per mode (default: cuDNN's autotuner; ``--deterministic``: kernels picked by rule), two
1-process runs and one 2-process run split by windows (both processes share the GPU when there
is one), each compared with the first run; and the speed of each run.

    python benchmarks/bench_determinism.py --light --out OUT.json
"""
from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

from bench_multigpu import same_outputs, speed, step1_command
from common import ROOT, environment, script_runs, write_json


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default=str(ROOT / "videos_for_test" / "input" / "3.mp4"))
    ap.add_argument("--work", default="/tmp/pssr_determinism")
    ap.add_argument("--light", action="store_true")
    ap.add_argument("--modes", default="default,deterministic")
    ap.add_argument("--runs", default="first,second,two_processes",
                    help="which runs per mode (first is always made)")
    ap.add_argument("--concat", action="store_true",
                    help="the clip is the concatenation of the clips in --clip's folder")
    ap.add_argument("--size", default="real", choices=["real", "tiny"])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    work, env, script = script_runs(a.work, a.size, a.light)
    import torch

    src = work / "input"
    src.mkdir(parents=True, exist_ok=True)
    if a.concat:
        from bench_multigpu import concat_clips

        concat_clips(Path(a.clip).parent, src / "long.mp4")
    else:
        link = src / Path(a.clip).name
        if not link.exists():
            link.symlink_to(Path(a.clip).resolve())
    res = {"env": environment("cuda" if torch.cuda.is_available() else "cpu"),
           "settings": vars(a), "modes": {}}
    wanted = set(a.runs.split(",")) | {"first"}
    for mode in a.modes.split(","):
        runs = {}
        for name, n in (("first", 1), ("second", 1), ("two_processes", 2)):
            if name not in wanted:
                continue
            dst = work / f"out_{mode}_{name}"
            cmd = step1_command(work, script, n, src, dst, a.size, ["--split", "windows"] + (
                ["--deterministic"] if mode == "deterministic" else []))
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            text = r.stdout + r.stderr
            runs[name] = dict(speed(text, n), returncode=r.returncode,
                              wall_s=time.perf_counter() - t0, log_tail=text[-1200:])
            if name != "first":
                runs[name]["against_first"] = same_outputs(work / f"out_{mode}_first", dst)
            print(mode, name, r.returncode, runs[name].get("against_first"), flush=True)
        res["modes"][mode] = runs
    write_json(res, a.out)


if __name__ == "__main__":
    main()
