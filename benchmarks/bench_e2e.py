"""End-to-end frames/s of inference_step_1.py on real clips with real-size random weights.

    python benchmarks/bench_e2e.py --clip PATH.mp4 --out benchmarks/results/e2e_h100.json
    python benchmarks/bench_e2e.py --input_dir videos_for_test/input --variants pixel,latent \
        --light --out OUT.json     # a folder; --light: machines with only the diffsynth wheel

Writes random real-size checkpoints with the factory (once, into --work), then runs the CLI for
each variant and reads the per-clip time it prints. Variants with --compile process the clip
twice in one run: the first copy pays the one-off compile, the second shows the steady state.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import time
from pathlib import Path

from common import ROOT, ensure_checkpoints, environment, script_launcher, write_json

VARIANTS = {
    "pixel": ("--outputs final", 1),
    "latent": ("--outputs final --window_space latent", 1),
    "pixel_compile": ("--outputs final --compile", 2),
    "latent_compile": ("--outputs final --compile --window_space latent", 2),
}
# the same with the reference VAE forward (issue 17: old and new path in one run)
VARIANTS.update({f"{k}_reference_vae": v for k, v in list(VARIANTS.items())})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default=None, help="one clip (restored --copies times)")
    ap.add_argument("--input_dir", default=None, help="a folder of clips (each restored once)")
    ap.add_argument("--light", action="store_true",
                    help="run the scripts through benchmarks/light_run.py")
    ap.add_argument("--work", default="/tmp/pssr_e2e")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    work = Path(a.work)
    env = dict(os.environ, PSSR_CACHE_DIR=str(work / "cache"), PYTHONUNBUFFERED="1")
    res = {"env": environment("cuda"), "settings": vars(a), "runs": {}}
    launcher = script_launcher(a.light)
    factory_s = ensure_checkpoints(work, "real", a.light, env)
    if factory_s is not None:
        res["factory_s"] = factory_s
    for name in a.variants.split(","):
        extra, copies = VARIANTS[name]
        if a.input_dir:
            in_dir = Path(a.input_dir).resolve()
        else:
            clip = Path(a.clip).resolve()
            in_dir = work / f"in_{copies}"
            in_dir.mkdir(parents=True, exist_ok=True)
            for k in range(copies):
                link = in_dir / f"{clip.stem}_{k}{clip.suffix}"
                if not link.exists():
                    link.symlink_to(clip)
        run_env = dict(env, PSSR_VAE="reference" if name.endswith("_reference_vae") else "fast")
        cmd = launcher + [str(ROOT / "inference_step_1.py"), "--input_dir", str(in_dir),
               "--output_dir", str(work / f"out_{name}"), "--sort_files", "--wan_model_dir",
               str(work / "dependent_models/Wan2.1-T2V-1.3B"),
               "--lora_base_path", str(work / "checkpoints/pretrained_models/base.safetensors"),
               "--lora_draft_path", str(work / "checkpoints/pretrained_models/draft.safetensors"),
               ] + extra.split()
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=run_env, cwd=ROOT)
        wall = time.perf_counter() - t0
        print(name, r.returncode, r.stdout[-1500:], r.stderr[-1500:] if r.returncode else "")
        runs = [(m.group(1), int(m.group(2)), float(m.group(3)), float(m.group(4)))
                for m in re.finditer(r"(\S+): (\d+) frames at \S+ fps in ([\d.]+) s \(([\d.]+) frames/s\)",
                                     r.stdout + r.stderr)]
        res["runs"][name] = {"args": extra, "returncode": r.returncode,
                             "wall_s_including_model_load": wall,
                             "clips": [{"name": n, "frames": f, "seconds": s, "frames_per_s": fps}
                                       for n, f, s, fps in runs]}
    write_json(res, a.out)


if __name__ == "__main__":
    main()
