"""Inference on one node with 1 and N GPUs in one lease (issue 16, inference half): step 1
(`--outputs final`, pixel windows) through torchrun on real-size random checkpoints, on

- "many": the clips of videos_for_test/input (split across processes as whole videos), and
- "long": one clip made by concatenating them (split across processes by windows);

frames/s with 1 and N processes, scaling efficiency, and whether the N-process outputs equal the
1-process outputs frame for frame. Step 1 runs with ``--deterministic`` (kernels picked by rule:
with cuDNN's autotuner even two 1-process runs differ in the last bits); ``--autotune`` measures
the default instead.

    python benchmarks/bench_multigpu.py --gpus 2 --light --out OUT.json
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import ROOT, environment, script_runs, write_json


def concat_clips(src: Path, out: Path) -> Path:
    from Wan_SR.data import video_io

    frames = [c for p in sorted(src.glob("*.mp4")) for c in video_io.iter_frames(p)]
    out.parent.mkdir(parents=True, exist_ok=True)
    video_io.write_video(out, np.concatenate(frames, 0), fps=30)
    return out


def speed(text: str, n: int) -> dict:
    if n > 1:
        m = re.search(r"all \d+ processes: (\d+) frames in ([\d.]+) s", text)
        frames, secs = (int(m.group(1)), float(m.group(2))) if m else (0, 0.0)
    else:
        runs = re.findall(r"(\S+): (\d+) frames at \S+ fps in ([\d.]+) s", text)
        frames, secs = sum(int(r[1]) for r in runs), sum(float(r[2]) for r in runs)
    return {"frames": frames, "seconds": secs, "frames_per_s": frames / secs if secs else 0.0}


def step1_command(work: Path, script: list, processes: int, src: Path, dst: Path, size: str,
                  extra: list) -> list:
    """The command line of step 1 (``--outputs final``) on ``processes`` processes (torchrun
    when several) with the random checkpoints under ``work``; ``size`` tiny: on the CPU."""
    launch = [sys.executable] + (["-m", "torch.distributed.run", "--nproc_per_node",
                                  str(processes)] if processes > 1 else [])
    return launch + script + [
        str(ROOT / "inference_step_1.py"), "--input_dir", str(src), "--output_dir", str(dst),
        "--outputs", "final", "--sort_files", "--no_progress",
        "--wan_model_dir", str(work / "dependent_models/Wan2.1-T2V-1.3B"),
        "--lora_base_path", str(work / "checkpoints/pretrained_models/base.safetensors"),
        "--lora_draft_path", str(work / "checkpoints/pretrained_models/draft.safetensors")] + \
        extra + (["--device", "cpu", "--torch_dtype", "float32"] if size == "tiny" else [])


def same_outputs(a: Path, b: Path) -> dict:
    """Per output video of ``a``: whether ``b`` has the same frames, else how far apart (the
    largest difference in 8-bit levels and the share of values that differ)."""
    from Wan_SR.data import video_io

    res = {}
    for f in sorted(a.rglob("*.mp4")):
        g = b / f.relative_to(a)
        if not g.exists():
            res[str(f.relative_to(a))] = {"identical": False, "missing": True}
            continue
        x, y = video_io.read_video(f), video_io.read_video(g)
        if x.shape != y.shape:
            res[str(f.relative_to(a))] = {"identical": False, "shapes": [x.shape, y.shape]}
            continue
        d = np.abs(x.astype(np.int16) - y.astype(np.int16))
        res[str(f.relative_to(a))] = {"identical": bool(d.max() == 0), "max_abs_diff": int(d.max()),
                                      "share_differing": float((d > 0).mean())}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--work", default="/tmp/pssr_multigpu")
    ap.add_argument("--light", action="store_true")
    ap.add_argument("--sets", default="many,long")
    ap.add_argument("--autotune", action="store_true",
                    help="step 1 with cuDNN's autotuner (its default) instead of --deterministic")
    ap.add_argument("--input_dir", default=str(ROOT / "videos_for_test" / "input"))
    ap.add_argument("--size", default="real", choices=["real", "tiny"],
                    help="tiny: a CPU check of this script (with CUDA_VISIBLE_DEVICES='')")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    work, env, script = script_runs(a.work, a.size, a.light)
    import torch

    res = {"env": environment("cuda" if torch.cuda.is_available() else "cpu"), "gpus": a.gpus,
           "settings": vars(a), "sets": {}}
    inputs = {"many": Path(a.input_dir).resolve()}
    if "long" in a.sets:
        inputs["long"] = concat_clips(inputs["many"], work / "long" / "long.mp4").parent
    for name in a.sets.split(","):
        out = {}
        for n in sorted({1, a.gpus}):
            dst = work / f"out_{name}_{n}"
            cmd = step1_command(work, script, n, inputs[name], dst, a.size,
                                [] if a.autotune else ["--deterministic"])
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
            out[n] = dict(speed(r.stdout + r.stderr, n), returncode=r.returncode,
                          wall_s_including_model_load=time.perf_counter() - t0,
                          log_tail=(r.stdout + r.stderr)[-1500:])
            print(name, n, out[n]["frames_per_s"], r.returncode, flush=True)
        f1, fn = out[1]["frames_per_s"], out[a.gpus]["frames_per_s"]
        res["sets"][name] = {
            "runs": out, "speedup": fn / f1 if f1 else None,
            "efficiency": fn / (a.gpus * f1) if f1 else None,
            "identical": same_outputs(work / f"out_{name}_1", work / f"out_{name}_{a.gpus}")}
    write_json(res, a.out)


if __name__ == "__main__":
    main()
