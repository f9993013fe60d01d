"""Training on one node with 1 and N processes (issue 16, training half): the real trainers
(`train_base.py`, then `train_draft.py` from the base it wrote) through torchrun, real-size
random checkpoints (`--size real`), 33x720x1280 clips of videos_for_test/input, the published
loss weights (LPIPS with random VGG weights), no tags. Per trainer and process count: seconds per
step (median of the steps after the first, from the trainer's DEBUG log), scaling efficiency
(samples/s with N over N x samples/s with 1), whether every process ends with the same weights
(``PSSR_DUMP_RANK_WEIGHTS``) and which checkpoint files were written (one set).

    python benchmarks/bench_train_multigpu.py --gpus 2 --light --out OUT.json

GPU machines without the project's packages: carry the diffsynth and av wheels (pip --target);
training reads clips with PyAV and needs no ffmpeg binary.

With ``--size tiny`` (and ``CUDA_VISIBLE_DEVICES= ACCELERATE_USE_CPU=true``) it checks itself on
CPU with small clips (``--data_dir``, ``--num_frames 9 --height 32 --width 48``). Merges its
results into ``--out`` when that file exists (the inference half's JSON).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, environment, script_runs, write_json


def make_metadata(data_dir: Path, num_frames: int, out: Path) -> Path:
    """A CSV of the clips of ``data_dir`` with at least ``num_frames`` frames, default prompt."""
    from Wan_SR.core.options import DEFAULT_PROMPT
    from Wan_SR.data.clip_reader import count_frames  # PyAV: no ffmpeg binary needed

    rows = ["video,prompt"]
    for p in sorted(data_dir.glob("*.mp4")):
        if count_frames(p) >= num_frames:
            rows.append(f"{p.name},\"{DEFAULT_PROMPT}\"")
    out.write_text("\n".join(rows) + "\n")
    return out


def step_seconds(text: str) -> list:
    return [float(s) for s in re.findall(r"step \d+: ([\d.]+) s", text)]


def same_weights(prefix: str, n: int) -> dict:
    from safetensors.torch import load_file

    sds = [load_file(f"{prefix}{r}.safetensors") for r in range(n)]
    worst = max(((sd[k].float() - sds[0][k].float()).abs().max().item()
                 for sd in sds[1:] for k in sds[0]), default=0.0)
    return {"processes": n, "tensors": len(sds[0]), "max_abs_diff": worst}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--trainers", default="base,draft")
    ap.add_argument("--work", default="/tmp/pssr_train_multigpu")
    ap.add_argument("--light", action="store_true")
    ap.add_argument("--size", default="real", choices=["real", "tiny"])
    ap.add_argument("--data_dir", default=str(ROOT / "videos_for_test" / "input"))
    ap.add_argument("--num_frames", type=int, default=33)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    work, env, script = script_runs(a.work, a.size, a.light)
    import torch

    from Wan_SR.testing.lpips import write_random_lpips_weights

    lpips = work / "lpips"
    write_random_lpips_weights(lpips)
    data = Path(a.data_dir).resolve()
    meta = make_metadata(data, a.num_frames, work / "metadata.csv")
    res = {"env": environment("cuda" if torch.cuda.is_available() else "cpu"), "gpus": a.gpus,
           "settings": vars(a), "clips": len(meta.read_text().splitlines()) - 1, "training": {}}
    for trainer in a.trainers.split(","):
        runs = {}
        for n in sorted({1, a.gpus}):
            dst = work / f"out_{trainer}_{n}"
            launch = [sys.executable] + (["-m", "torch.distributed.run", "--nproc_per_node",
                                          str(n)] if n > 1 else [])
            cmd = launch + script + [
                str(ROOT / f"train_{trainer}.py"), "--dataset_base_path", str(data),
                "--dataset_metadata_path", str(meta), "--data_file_keys", "video",
                "--num_frames", str(a.num_frames), "--height", str(a.height),
                "--width", str(a.width), "--wan_model_dir",
                str(work / "dependent_models/Wan2.1-T2V-1.3B"), "--output_path", str(dst),
                "--max_train_steps", str(a.steps), "--save_steps", str(a.steps),
                "--report_to", "none", "--lpips_weights", str(lpips), "--no_tags",
                "--log_level", "debug", "--no_progress"]
            if trainer == "draft":
                cmd += ["--load_model_base_from", str(work / "out_base_1" / "latest_base.safetensors")]
            if a.size == "tiny":
                cmd += ["--mixed_precision", "no"] + (["--lora_rank", "4"]
                                                      if trainer == "base" else [])
            dump = str(work / f"dump_{trainer}_{n}_")
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                               env=dict(env, PSSR_DUMP_RANK_WEIGHTS=dump))
            text = r.stdout + r.stderr
            secs = step_seconds(text)
            later = secs[1:] or secs
            run = {"returncode": r.returncode, "wall_s": time.perf_counter() - t0,
                   "step_s": secs, "s_per_step": statistics.median(later) if later else None,
                   "files": sorted(str(p.relative_to(dst)) for p in dst.rglob("*")
                                   if p.is_file() and "state" not in p.parts),
                   "log_tail": text[-1500:]}
            if r.returncode == 0:
                run["weights_across_processes"] = same_weights(dump, n)
            runs[n] = run
            print(trainer, n, run["s_per_step"], r.returncode, flush=True)
        s1, sn = runs[1]["s_per_step"], runs[a.gpus]["s_per_step"]
        res["training"][trainer] = {
            "runs": runs,
            # every process takes one sample per step: N samples per step with N processes
            "efficiency": (s1 / sn) if s1 and sn else None}
    out = Path(a.out)
    if out.exists():
        merged = json.loads(out.read_text())
        merged["training"] = res["training"]
        merged.setdefault("training_settings", res["settings"])
        res = merged
    write_json(res, out)


if __name__ == "__main__":
    main()
