"""What does a training step cost, and how do the trainers scale to several GPUs? The trainers'
own command lines (train_base.py; train_draft.py from the factory's base.safetensors) on random
checkpoints of the real Wan2.1-1.3B sizes, clips of videos_for_test/input cover-resized to each
of --shapes, the published loss weights (LPIPS with random VGG weights), no tags.

Per trainer, shape and process count (1, and N with --gpus N through torchrun): seconds per step
(the median of the steps after the first, from the trainer's DEBUG log: a base step is one
update of the base and one of the regulariser, a draft step three draft updates), the peak GPU
memory of each process (benchmarks/light_run.py --peak_file), the checkpoint files written, and
with N processes the scaling efficiency (samples/s with N over N x samples/s with 1: every
process takes one sample per step) and whether every process ends with the same weights
(``PSSR_DUMP_RANK_WEIGHTS``). Training reads clips with PyAV: GPU machines carry its wheel.

    python benchmarks/training/trainers.py --light                        # 33x720x1280
    python benchmarks/training/trainers.py --light --trainers base --shapes 33x720x1280,17x480x832
    python benchmarks/training/trainers.py --light --gpus 2
    python benchmarks/training/trainers.py --quick                        # tiny, CPU
"""
from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.commands import Launch, clip_from_folder, fresh, prepare  # noqa: E402
from benchmarks.common import ROOT, default_device, parse, parser, record, save  # noqa: E402
# here, not in wan_sr.py: it reads clips with PyAV, which only the data and training benchmarks need
from Wan_SR.data.clip_reader import count_frames  # noqa: E402

NAME = "training/trainers"
STEP_LINE = re.compile(r"step \d+: ([\d.]+) s")


def make_metadata(data_dir: Path, num_frames: int, out: Path) -> Path:
    """A CSV of the clips of ``data_dir`` with at least ``num_frames`` frames, default prompt."""
    rows = ["video,prompt"] + [f"{p.name},\"{ws.DEFAULT_PROMPT}\""
                               for p in sorted(data_dir.glob("*.mp4"))
                               if count_frames(p) >= num_frames]
    out.write_text("\n".join(rows) + "\n")
    return out


def same_weights(prefix: str, n: int) -> dict:
    """The largest difference between the trainable weights every process dumped."""
    sds = [load_file(f"{prefix}{r}.safetensors") for r in range(n)]
    worst = max(((sd[k].float() - sds[0][k].float()).abs().max().item()
                  for sd in sds[1:] for k in sds[0]), default=0.0)
    return {"processes": n, "tensors": len(sds[0]), "max_abs_diff": worst}


def train(launch: Launch, trainer: str, n: int, shape: tuple, data: dict, args) -> dict:
    """One run of ``train_<trainer>.py`` on ``n`` processes: step times, memory, files."""
    T, H, W = shape
    dst = fresh(launch.work / f"out_{trainer}_{T}x{H}x{W}_{n}")
    steps = args.repeats + 1  # the first step warms up
    script = [ROOT / f"train_{trainer}.py", "--dataset_base_path", data["dir"],
              "--dataset_metadata_path", data["meta"], "--data_file_keys", "video",
              "--num_frames", T, "--height", H, "--width", W, "--wan_model_dir", launch.wan_dir,
              "--output_path", dst, "--max_train_steps", steps, "--save_steps", steps,
              "--report_to", "none", "--lpips_weights", data["lpips"], "--no_tags",
              "--log_level", "debug", "--no_progress"]
    if trainer == "draft":
        script += ["--load_model_base_from", launch.base_checkpoint]
    if args.quick:
        script += ["--mixed_precision", "no"] + (["--lora_rank", "4"] if trainer == "base" else [])
    dump = str(launch.work / f"dump_{trainer}_{n}_")
    r = launch.run(script, n, PSSR_DUMP_RANK_WEIGHTS=dump)
    secs = [float(s) for s in STEP_LINE.findall(r.log)]
    later = secs[1:] or secs
    out = dict(r.summary(), step_s=secs, s_per_step=statistics.median(later) if later else None,
               files=sorted(str(p.relative_to(dst)) for p in dst.rglob("*")
                            if p.is_file() and "state" not in p.parts))
    if r.returncode == 0:
        out["weights_across_processes"] = same_weights(dump, n)
    print(f"{trainer} {T}x{H}x{W} on {n}: {out['s_per_step']} s/step, peak {out['peak_gib']} "
          f"GiB, exit {r.returncode}", flush=True)
    return out


def training_data(launch: Launch, args, num_frames: int) -> dict:
    """The clip folder (small clips with --quick), its metadata and random LPIPS weights."""
    src = Path(args.data_dir).resolve()
    if args.quick:
        src = clip_from_folder(src, launch.work / "quick_data" / "clip.mp4", frames=17,
                               stride=8).parent
    lpips = launch.work / "lpips"
    ws.write_random_lpips_weights(lpips)
    return {"dir": src, "meta": make_metadata(src, num_frames, launch.work / "metadata.csv"),
            "lpips": lpips}


def main(argv=None):
    p = parser(__doc__, repeats=3, unit="timed training steps, after one warm-up step",
               quick="tiny checkpoints on the CPU, 9x32x48 clips")
    p.add_argument("--trainers", default="base,draft")
    p.add_argument("--shapes", default="33x720x1280", help="clip shapes FRAMESxHEIGHTxWIDTH")
    p.add_argument("--gpus", type=int, default=1,
                   help="also train on this many processes (torchrun)")
    p.add_argument("--data_dir", default=str(ROOT / "videos_for_test" / "input"))
    p.add_argument("--work", default="/tmp/pssr_train",
                   help="random checkpoints, clips, metadata and outputs")
    args = parse(p, argv)
    shapes = [(9, 32, 48)] if args.quick else \
        [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    launch = prepare(args.work, args.quick, args.light)
    res = record(args, "cpu" if args.quick else default_device())
    res["training"] = {}
    for shape in shapes:
        data = training_data(launch, args, shape[0])
        res.setdefault("clips", {})["x".join(map(str, shape))] = \
            len(data["meta"].read_text().splitlines()) - 1
        for trainer in args.trainers.split(","):
            runs = {n: train(launch, trainer, n, shape, data, args) for n in sorted({1, args.gpus})}
            s1, sn = runs[1]["s_per_step"], runs[args.gpus]["s_per_step"]
            res["training"].setdefault(trainer, {})["x".join(map(str, shape))] = {
                "runs": runs, "efficiency": (s1 / sn) if s1 and sn and args.gpus > 1 else None}
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
