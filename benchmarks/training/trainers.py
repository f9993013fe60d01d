"""What does a training step cost, and how do the trainers scale to several GPUs? The trainers'
own command lines (train_base.py; train_draft.py from the factory's base.safetensors) on random
checkpoints of the real Wan2.1-1.3B sizes, clips of videos_for_test/input cover-resized to each
of --shapes, the published loss weights (LPIPS with random VGG weights), no tags.

Per trainer, shape and run (``--base_runs`` / ``--draft_runs``: a list of
``SETTING[+compile][+nographs][@GIB][:STEPS]``, SETTING a --gradient_checkpointing value
(``+compile``: with --compile; ``+nographs``: --cuda_graphs False, the pixel losses launched
kernel by kernel), GIB a memory target with the allocator capped there, as on a smaller card; and with --gpus N the first run again on N
processes through torchrun): seconds per step (the median of the steps after the first, from the
trainer's DEBUG log: a base step is one update of the base and one of the regulariser, a draft
step three draft updates), samples/s and frames/s per GPU, the peak GPU memory of each process
(benchmarks/light_run.py --peak_file), the losses of the first steps, the profile of one step
(``--profile_step``: each model's forward, backward and optimiser), the checkpoint files
written, and with N processes the scaling efficiency (samples/s with N over N x samples/s with
1: every process takes one sample per step) and whether every process ends with the same weights
(``PSSR_DUMP_RANK_WEIGHTS``). The setting ``release`` runs our trainer with the published
trainer's structure (``release_structure.py``: bf16 trainables, no autocast, every block
recomputed, the text encoder resident, ...). ``summary``: the first run's numbers, the 75 GiB base
run's, the release structure's time over the first run's, and how far each run's first losses
are from those of ``full`` (every block recomputed). Training reads
clips with PyAV: GPU machines carry its wheel.

    python benchmarks/training/trainers.py --light --out benchmarks/results/train_speed_h200.json
    python benchmarks/training/trainers.py --light --trainers base --shapes 33x720x1280,17x480x832
    python benchmarks/training/trainers.py --light --gpus 2
    python benchmarks/training/trainers.py --quick                        # tiny, CPU
"""
from __future__ import annotations

import json
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
RECOMPUTE_LINE = re.compile(r"gradient checkpointing auto: (.*)")
RELEASE = ROOT / "benchmarks" / "training" / "release_structure.py"


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


def parse_run(text: str, repeats: int) -> tuple:
    """``SETTING[+FLAG...][@GIB][:STEPS]`` -> (setting with its flags, memory target or None,
    steps)."""
    text, _, steps = text.partition(":")
    setting, _, gib = text.partition("@")
    return setting, float(gib) if gib else None, int(steps) if steps else repeats + 1


def train(launch: Launch, trainer: str, n: int, shape: tuple, data: dict, args,
          run: tuple = ("auto", None, 4)) -> dict:
    """One run of ``train_<trainer>.py`` on ``n`` processes (``run``: the checkpointing
    setting, the memory target (GiB, also the allocator's cap) or None, the steps): step
    times, memory, losses, the profile, files."""
    T, H, W = shape
    setting, target, steps = run
    label = setting + (f"@{target:g}" if target else "")
    setting, *flags = setting.split("+")
    unknown = set(flags) - {"compile", "nographs"}
    if unknown:
        raise SystemExit(f"run {label!r}: unknown flag(s) {sorted(unknown)}")
    dst = fresh(launch.work / f"out_{trainer}_{T}x{H}x{W}_{n}_{label}")
    release = setting == "release"  # our trainer with the release's structure
    script = [RELEASE, trainer] if release else [ROOT / f"train_{trainer}.py"]
    script += ["--dataset_base_path", data["dir"],
              "--dataset_metadata_path", data["meta"], "--data_file_keys", "video",
              "--num_frames", T, "--height", H, "--width", W, "--wan_model_dir", launch.wan_dir,
              "--output_path", dst, "--max_train_steps", steps, "--save_steps", steps,
              "--report_to", "none", "--lpips_weights", data["lpips"], "--no_tags",
              "--log_level", "debug", "--no_progress", "--gradient_checkpointing",
              "full" if release else setting,
              "--profile_step", min(args.profile_step, steps)]
    if target:
        script += ["--memory_target", target]
    script += ["--compile", str("compile" in flags),  # its default is auto
               "--cuda_graphs", str(not release and "nographs" not in flags)]
    if trainer == "draft":
        script += ["--load_model_base_from", launch.base_checkpoint]
    if args.quick:
        script += ["--mixed_precision", "no"] + (["--lora_rank", "4"] if trainer == "base" else [])
    dump = str(launch.work / f"dump_{trainer}_{n}_")
    r = launch.run(script, n, memory_cap=target, PSSR_DUMP_RANK_WEIGHTS=dump)
    secs = [float(s) for s in STEP_LINE.findall(r.log)]
    later = secs[1:] or secs
    per_step = statistics.median(later) if later else None
    out = dict(r.summary(), setting=setting, memory_target_gib=target, step_s=secs,
               s_per_step=per_step, samples_per_s=n / per_step if per_step else None,
               frames_per_s_per_gpu=T / per_step if per_step else None,
               recompute=RECOMPUTE_LINE.findall(r.log),
               files=sorted(str(p.relative_to(dst)) for p in dst.rglob("*")
                            if p.is_file() and "state" not in p.parts))
    if (dst / "losses.jsonl").exists():
        out["losses"] = [json.loads(ln).get("loss")
                         for ln in (dst / "losses.jsonl").read_text().splitlines()]
    for prof in dst.glob("profile_step_*.json"):
        out["profile"] = json.loads(prof.read_text())
    for prof in dst.glob("gpu_idle_step_*.json"):  # the step after, traced (GPU only)
        out["gpu_idle"] = json.loads(prof.read_text())
    if r.returncode == 0:
        out["weights_across_processes"] = same_weights(dump, n)
    print(f"{trainer} {T}x{H}x{W} {label} on {n}: {out['s_per_step']} s/step, peak "
          f"{out['peak_gib']} GiB, exit {r.returncode}", flush=True)
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


def summarize(training: dict) -> dict:
    """The numbers the README quotes (the first shape's runs): per trainer the first run's
    seconds per step and peak, the base's run with a memory target, and each run's largest
    relative difference from ``full`` in the losses of its first 5 steps."""
    out = {}
    for trainer, shapes in training.items():
        runs = next(iter(shapes.values()))["runs"]
        first = next(iter(runs.values()))
        key = "base_s_per_step" if trainer == "base" else "draft_s_per_batch"
        out[key] = first["s_per_step"]
        out[f"{trainer}_peak_gib"] = first["peak_gib"]
        for label, r in runs.items():
            if trainer == "base" and r.get("memory_target_gib"):
                out[f"base_s_per_step_{r['memory_target_gib']:g}gib"] = r["s_per_step"]
                out[f"base_peak_gib_{r['memory_target_gib']:g}gib"] = r["peak_gib"]
            if label == "release" and first["s_per_step"] and r["s_per_step"]:
                out[f"{trainer}_release_structure_s"] = r["s_per_step"]
                out[f"{trainer}_release_over_ours"] = r["s_per_step"] / first["s_per_step"]
            ref = runs.get("full", {}).get("losses")
            if ref and r.get("losses") and label not in ("full", "release"):
                out.setdefault(f"{trainer}_first_losses_rel_diff_to_full", {})[label] = max(
                    abs(a - b) / max(abs(b), 1e-12) for a, b in zip(r["losses"][:5], ref[:5]))
    return out


def main(argv=None):
    p = parser(__doc__, repeats=3, unit="timed training steps, after one warm-up step",
               quick="tiny checkpoints on the CPU, 9x32x48 clips")
    p.add_argument("--trainers", default="base,draft")
    p.add_argument("--shapes", default="33x720x1280", help="clip shapes FRAMESxHEIGHTxWIDTH")
    p.add_argument("--base_runs", default="auto", help="runs of the base trainer, "
                                                       "SETTING[+compile][+nographs][@GIB]"
                                                       "[:STEPS], "
                                                       "comma-separated")
    p.add_argument("--draft_runs", default="auto", help="runs of the draft trainer, the same way")
    p.add_argument("--profile_step", type=int, default=2, help="the step each run profiles")
    p.add_argument("--gpus", type=int, default=1,
                   help="also train on this many processes (torchrun), the first run's setting")
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
        key = "x".join(map(str, shape))
        res.setdefault("clips", {})[key] = len(data["meta"].read_text().splitlines()) - 1
        for trainer in args.trainers.split(","):
            plan = [parse_run(r, args.repeats)
                    for r in getattr(args, f"{trainer}_runs").split(",")]
            entry = res["training"].setdefault(trainer, {}).setdefault(key, {"runs": {}})
            for run in plan:
                label = run[0] + (f"@{run[1]:g}" if run[1] else "")
                entry["runs"][label] = train(launch, trainer, 1, shape, data, args, run)
                save(res, args, NAME)
            if args.gpus > 1:
                first = next(iter(entry["runs"].values()))
                many = train(launch, trainer, args.gpus, shape, data, args, plan[0])
                entry["runs"][f"{args.gpus} processes"] = many
                s1, sn = first["s_per_step"], many["s_per_step"]
                entry["efficiency"] = s1 / sn if s1 and sn else None
    res["summary"] = summarize(res["training"])
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
