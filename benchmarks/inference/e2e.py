"""How fast is inference_step_1.py end to end, does it give the same bits every run, and how does
it scale to several GPUs? The command (``--outputs final``) on real clips with random checkpoints
of the real sizes (written once by the factory into --work); frames/s of each clip from its log
(video decode, x264 encode and blending included, model loading excluded).

- Variants: a window space, ``pixel`` (the published windows) or ``latent``
  (``--window_space latent``), with modifiers joined by ``_``: ``compile`` (``--compile``; a
  single clip is then restored twice in one process: the first copy pays the compile, the second
  shows the steady state), ``deterministic`` (``--deterministic``), ``reference_vae``
  (``PSSR_VAE=reference``). E.g. ``pixel``, ``latent_compile``, ``pixel_deterministic``.
- ``--repeats R``: R one-process runs of each variant; each later run's outputs are compared with
  the first run's (identical, or how far apart).
- ``--gpus N``: each variant also runs on N processes (torchrun, one per GPU, sharing the GPUs
  when there are fewer): speed-up and efficiency against one process, and whether the outputs
  equal the one-process outputs frame for frame.
- Inputs: the clips of --input_dir (each once), or one clip: --clip, or --concat N (the first N
  frames of --input_dir's clips played one after the other; 0: all of them).

    python benchmarks/inference/e2e.py --light                                   # five clips
    python benchmarks/inference/e2e.py --light --concat 121 --variants pixel,pixel_compile
    python benchmarks/inference/e2e.py --light --gpus 2 --variants pixel_deterministic
    python benchmarks/inference/e2e.py --light --clip videos_for_test/input/3.mp4 --split windows \\
        --repeats 2 --gpus 2 --variants pixel,pixel_deterministic              # determinism
    python benchmarks/inference/e2e.py --quick                                   # tiny, CPU
"""
from __future__ import annotations

import re
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository
from benchmarks import wan_sr as ws  # noqa: E402
from benchmarks.commands import Launch, clip_from_folder, fresh, prepare  # noqa: E402
from benchmarks.common import ROOT, default_device, parse, parser, record, save  # noqa: E402

NAME = "inference/e2e"
WINDOWS = {"pixel": [], "latent": ["--window_space", "latent"]}
MODIFIERS = {"compile": (["--compile"], {}), "deterministic": (["--deterministic"], {}),
             "reference_vae": ([], {"PSSR_VAE": "reference"})}
CLIP_LINE = re.compile(r"(\S+): (\d+) frames at \S+ fps in ([\d.]+) s \(([\d.]+) frames/s\)")
ALL_LINE = re.compile(r"all \d+ processes: (\d+) frames in ([\d.]+) s")


def variant(name: str) -> tuple[list, dict, bool]:
    """``(arguments, environment, compiles)`` of a variant name (module docstring)."""
    space, _, rest = name.partition("_")
    if space not in WINDOWS:
        raise SystemExit(f"variant {name!r}: starts with one of {sorted(WINDOWS)}")
    extra, env, mods = list(WINDOWS[space]), {"PSSR_VAE": "fast"}, []
    while rest:
        mod = next((m for m in MODIFIERS if rest == m or rest.startswith(m + "_")), None)
        if mod is None:
            raise SystemExit(f"variant {name!r}: unknown modifier in {rest!r}; "
                             f"known: {sorted(MODIFIERS)}")
        extra += MODIFIERS[mod][0]
        env.update(MODIFIERS[mod][1])
        mods.append(mod)
        rest = rest[len(mod) + 1:]
    return extra, env, "compile" in mods


def speed(text: str, processes: int) -> dict:
    """Frames, seconds and frames/s from step 1's log (per clip, and in all)."""
    clips = [{"name": m.group(1), "frames": int(m.group(2)), "seconds": float(m.group(3)),
              "frames_per_s": float(m.group(4))} for m in CLIP_LINE.finditer(text)]
    m = ALL_LINE.search(text) if processes > 1 else None
    frames = int(m.group(1)) if m else sum(c["frames"] for c in clips)
    secs = float(m.group(2)) if m else sum(c["seconds"] for c in clips)
    return {"clips": clips, "frames": frames, "seconds": secs,
            "frames_per_s": frames / secs if secs else 0.0}


def same_outputs(a: Path, b: Path) -> dict:
    """Per output video of ``a``: whether ``b`` has the same frames, else how far apart (the
    largest difference in 8-bit levels and the share of values that differ)."""
    res = {}
    for f in sorted(a.rglob("*.mp4")):
        g, name = b / f.relative_to(a), str(f.relative_to(a))
        if not g.exists():
            res[name] = {"identical": False, "missing": True}
            continue
        x, y = ws.read_video(f), ws.read_video(g)
        if x.shape != y.shape:
            res[name] = {"identical": False, "shapes": [list(x.shape), list(y.shape)]}
            continue
        d = np.abs(x.astype(np.int16) - y.astype(np.int16))
        res[name] = {"identical": bool(d.max() == 0), "max_abs_diff": int(d.max()),
                     "share_differing": float((d > 0).mean())}
    return res


def step1(launch: Launch, processes: int, src: Path, dst: Path, quick: bool, extra: list,
          env: dict) -> dict:
    """One run of step 1 on ``src`` into a fresh ``dst``: its speed and exit."""
    script = [ROOT / "inference_step_1.py", "--input_dir", src, "--output_dir", fresh(dst),
              "--outputs", "final", "--sort_files", "--no_progress",
              "--wan_model_dir", launch.wan_dir, "--lora_base_path", launch.base_checkpoint,
              "--lora_draft_path", launch.draft_checkpoint, *extra]
    if quick:
        script += ["--device", "cpu", "--torch_dtype", "float32"]
    r = launch.run(script, processes, **env)
    out = dict(speed(r.log, processes), **r.summary())
    print(f"{dst.name}: {out['frames_per_s']:.2f} frames/s, exit {r.returncode}", flush=True)
    return out


def inputs(args, work: Path) -> dict:
    """Input folders by the copies of each clip they hold (1, or 2 for compile variants)."""
    src = Path(args.input_dir).resolve()
    if args.quick:
        clip = clip_from_folder(src, work / "quick" / "clip9.mp4", frames=9, stride=8)
    elif args.concat is not None:
        clip = clip_from_folder(src, work / "concat" / f"clip{args.concat or 'all'}.mp4",
                                frames=args.concat or None)
    elif args.clip:
        clip = Path(args.clip).resolve()
    else:
        return {1: src, 2: src}
    folders = {}
    for copies in (1, 2):
        folder = work / f"in_{copies}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(copies):
            link = folder / f"{clip.stem}_{k}{clip.suffix}"
            if not link.exists():
                link.symlink_to(clip)
        folders[copies] = folder
    return folders


def run_variant(name: str, launch: Launch, folders: dict, args) -> dict:
    """--repeats one-process runs of a variant (later ones compared with the first) and, with
    --gpus N, one run on N processes compared with the first."""
    extra, env, compiles = variant(name)
    extra += ["--split", args.split] if args.split else []
    src = folders[2 if compiles else 1]
    dst = [launch.work / f"out_{name}_1p_{k}" for k in range(args.repeats)]
    runs = [step1(launch, 1, src, d, args.quick, extra, env) for d in dst]
    out = {"args": " ".join(extra), "env": env, "runs": runs,
           "against_first": [same_outputs(dst[0], d) for d in dst[1:]]}
    if args.gpus > 1:
        many = launch.work / f"out_{name}_{args.gpus}p"
        run = step1(launch, args.gpus, src, many, args.quick, extra, env)
        f1 = statistics.median(r["frames_per_s"] for r in runs)
        fn = run["frames_per_s"]
        out["processes"] = {"n": args.gpus, "run": run, "speedup": fn / f1 if f1 else None,
                            "efficiency": fn / (args.gpus * f1) if f1 else None,
                            "identical": same_outputs(dst[0], many)}
    return out


def main(argv=None):
    p = parser(__doc__, repeats=1, unit="one-process runs of each variant",
               quick="tiny checkpoints on the CPU, one 9-frame 160x90 clip")
    p.add_argument("--variants", default="pixel,latent,pixel_reference_vae,latent_reference_vae")
    p.add_argument("--input_dir", default=str(ROOT / "videos_for_test" / "input"))
    p.add_argument("--clip", default=None, help="one clip instead of --input_dir's clips")
    p.add_argument("--concat", type=int, default=None,
                   help="one clip of the first N frames of --input_dir's clips (0: all)")
    p.add_argument("--gpus", type=int, default=1,
                   help="also run each variant on this many processes (torchrun)")
    p.add_argument("--split", default=None, choices=["auto", "videos", "windows"],
                   help="step 1's --split (default: its own)")
    p.add_argument("--work", default="/tmp/pssr_e2e",
                   help="random checkpoints, kernel caches, inputs and outputs")
    args = parse(p, argv)
    launch = prepare(args.work, args.quick, args.light)
    folders = inputs(args, launch.work)
    res = record(args, "cpu" if args.quick else default_device())
    res["runs"] = {name: run_variant(name, launch, folders, args)
                   for name in args.variants.split(",")}
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
