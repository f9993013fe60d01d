"""How fast is inference_step_1.py end to end, does it give the same bits every run, and how does
it scale to several GPUs? The command (``--outputs final``) on real clips with random checkpoints
of the real sizes (written once by the factory into --work); frames/s of each clip from its log
(video decode, x264 encode and blending included, model loading excluded).

- Variants: a window space, ``pixel`` (the published windows) or ``latent``
  (``--window_space latent``), with modifiers joined by ``_``: ``compile`` (``--compile``; a
  single clip is then restored twice in one process: the first copy pays the compile, the second
  shows the steady state), ``deterministic`` (``--deterministic``), ``reference_vae``
  (``PSSR_VAE=reference``), ``final`` (``--final``: the four branches and final) or
  ``branches`` (step 1's default outputs: the four branches) instead of ``--outputs final``,
  ``fp8`` (``--fp8``), ``fp32`` (``--torch_dtype float32``), ``profile`` (``--profile``: the
  GPU-busy share and the main thread's phases of the steady state). E.g. ``pixel``,
  ``latent_compile``, ``pixel_final_profile``, ``latent_fp8``.
- Per run: frames/s per clip, the steady state (every clip but the first), the VAE passes (the
  decode count), with ``profile`` the GPU-busy share; ``--psnr A:B,...``: PSNR of variant B's
  outputs against A's (per output video and the mean); ``--summary_into FILE``: the summary keys
  these runs give (``final_over_outputs_final``, ``default_over_outputs_final``,
  ``steady_fps_pixel``, ``steady_fps_latent``, ``steady_fps_latent_fp8``, ``gpu_busy``,
  ``fp8_psnr_vs_bf16``, ``bf16_psnr_vs_fp32``) merged into FILE (``bench_e2e.py``).
- ``--smooth N``: the input is one smooth clip of N frames at 1280x720 (the fp8 and bf16 error
  on content without noise).
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

import json
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
             "reference_vae": ([], {"PSSR_VAE": "reference"}),
             "final": (["--final"], {}), "branches": ([], {}), "fp8": (["--fp8"], {}),
             "fp32": (["--torch_dtype", "float32"], {}), "profile": ([], {})}
OUTPUTS = {"final": [], "branches": []}  # these choose the outputs; else --outputs final
CLIP_LINE = re.compile(r"(\S+): (\d+) frames at \S+ fps in ([\d.]+) s \(([\d.]+) frames/s\)")
ALL_LINE = re.compile(r"all \d+ processes: (\d+) frames in ([\d.]+) s")
VAE_LINE = re.compile(r"VAE passes: (\d+) encode\(s\), (\d+) decode\(s\)")


def variant(name: str) -> tuple[list, dict, list]:
    """``(arguments, environment, modifiers)`` of a variant name (module docstring)."""
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
    if not any(m in OUTPUTS for m in mods):
        extra = ["--outputs", "final", *extra]
    return extra, env, mods


def speed(text: str, processes: int) -> dict:
    """Frames, seconds and frames/s from step 1's log (per clip, and in all)."""
    clips = [{"name": m.group(1), "frames": int(m.group(2)), "seconds": float(m.group(3)),
              "frames_per_s": float(m.group(4))} for m in CLIP_LINE.finditer(text)]
    m = ALL_LINE.search(text) if processes > 1 else None
    frames = int(m.group(1)) if m else sum(c["frames"] for c in clips)
    secs = float(m.group(2)) if m else sum(c["seconds"] for c in clips)
    later = clips[1:] or clips
    steady_s = sum(c["seconds"] for c in later)
    vae = VAE_LINE.search(text)
    return {"clips": clips, "frames": frames, "seconds": secs,
            "frames_per_s": frames / secs if secs else 0.0,
            "steady_frames_per_s": sum(c["frames"] for c in later) / steady_s if steady_s else 0.0,
            "encodes": int(vae.group(1)) if vae else None,
            "decodes": int(vae.group(2)) if vae else None}


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


def psnr_outputs(a: Path, b: Path) -> dict:
    """PSNR (dB, 8-bit, over all frames) of each output video of ``b`` against ``a``'s, and
    their mean."""
    res = {}
    for f in sorted(a.rglob("*.mp4")):
        g = b / f.relative_to(a)
        if g.exists():
            x, y = ws.read_video(f).astype(np.float64), ws.read_video(g).astype(np.float64)
            mse = float(((x - y) ** 2).mean()) if x.shape == y.shape else None
            res[str(f.relative_to(a))] = (None if mse is None else
                                          float("inf") if mse == 0 else
                                          10 * np.log10(255.0 ** 2 / mse))
    vals = [v for v in res.values() if v is not None and np.isfinite(v)]
    return {"per_output": res, "mean_db": float(np.mean(vals)) if vals else None}


def profile_summary(path: Path) -> dict:
    """The steady state and the per-clip sums of a ``--profile`` file."""
    if not path.exists():
        return {"missing": str(path)}
    d = json.loads(path.read_text())
    return {"steady": d["steady"], "clips": d["clips"], "file": str(path)}


def step1(launch: Launch, processes: int, src: Path, dst: Path, quick: bool, extra: list,
          env: dict) -> dict:
    """One run of step 1 on ``src`` into a fresh ``dst``: its speed and exit."""
    script = [ROOT / "inference_step_1.py", "--input_dir", src, "--output_dir", fresh(dst),
              "--sort_files", "--no_progress",
              "--wan_model_dir", launch.wan_dir, "--lora_base_path", launch.base_checkpoint,
              "--lora_draft_path", launch.draft_checkpoint, *extra]
    if quick:
        script += ["--device", "cpu", "--torch_dtype", "float32"]
    r = launch.run(script, processes, **env)
    out = dict(speed(r.log, processes), **r.summary())
    print(f"{dst.name}: {out['frames_per_s']:.2f} frames/s, exit {r.returncode}", flush=True)
    return out


def smooth_clip(path: Path, frames: int, height: int, width: int) -> Path:
    """A smooth moving clip (broad colour waves, no noise) of ``frames`` frames."""
    if not path.exists():
        t = np.arange(frames)[:, None, None]
        y = np.linspace(0, 1, height)[None, :, None]
        x = np.linspace(0, 1, width)[None, None, :]
        rgb = [0.5 + 0.4 * np.sin(2 * np.pi * (x * 1.5 + 0.02 * t) + k) *
               np.cos(2 * np.pi * (y - 0.01 * t) + k / 2) for k in range(3)]
        clip = (np.stack(np.broadcast_arrays(*rgb), -1) * 255).round().astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        ws.write_video(path, clip, fps=30)
    return path


SUMMARY_RUNS = {"final_over_outputs_final": ("pixel", "pixel_final"),
                "default_over_outputs_final": ("pixel", "pixel_branches")}
STEADY = {"steady_fps_pixel": "pixel", "steady_fps_latent": "latent",
          "steady_fps_latent_fp8": "latent_fp8"}
PSNR_KEYS = {"fp8_psnr_vs_bf16": ("latent", "latent_fp8"),
             "bf16_psnr_vs_fp32": ("latent_fp32", "latent")}


def summarize(runs: dict, psnr: dict, label: str) -> dict:
    """The summary keys (module docstring) these runs give: on the five clips, time ratios
    over their seconds (model loading excluded; ``*_steady``: over clips 2-5) and steady
    frames/s; on any input, the profiled runs' GPU-busy share and the PSNR pairs (under
    ``label``: the input they were measured on)."""
    first = {name: v["runs"][0] for name, v in runs.items()}
    out: dict = {}
    five = label == "five_clips"
    for key, (a, b) in SUMMARY_RUNS.items():
        if five and a in first and b in first and first[a]["seconds"]:
            out[key] = first[b]["seconds"] / first[a]["seconds"]
            if first[b]["steady_frames_per_s"]:
                out[key + "_steady"] = (first[a]["steady_frames_per_s"]
                                        / first[b]["steady_frames_per_s"])
    for key, name in STEADY.items():
        if five and name in first:
            out[key] = first[name]["steady_frames_per_s"]
    busy = {name: r["profile"]["steady"]["gpu_busy"] for name, r in first.items()
            if "steady" in r.get("profile", {})}
    if busy:
        out["gpu_busy"] = busy
    for key, pair in PSNR_KEYS.items():
        got = psnr.get(":".join(pair))
        if got is not None:
            out[key] = {label: got["mean_db"]}
    return out


def merge_summary(path: Path, new: dict) -> dict:
    """``new`` merged into the summary JSON at ``path`` (dict values merged one level)."""
    old = json.loads(path.read_text()) if path.exists() else {}
    for k, v in new.items():
        old[k] = dict(old.get(k) or {}, **v) if isinstance(v, dict) and isinstance(
            old.get(k), dict) else v
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(old, indent=2) + "\n")
    tmp.replace(path)
    return old


def summary_so_far(res: dict, args, label: str) -> None:
    """The summary of the runs so far, saved (and merged into --summary_into)."""
    res["summary"] = summarize(res["runs"], res["psnr"], label)
    if args.summary_into:
        merged = merge_summary(Path(args.summary_into), dict(
            res["summary"], env=res["env"], git=res["git"], sources={label: res["command"]}))
        res["summary_file"] = {"path": args.summary_into, "content": merged}
    save(res, args, NAME)


def inputs(args, work: Path) -> dict:
    """Input folders by the copies of each clip they hold (1, or 2 for compile variants)."""
    src = Path(args.input_dir).resolve()
    if args.smooth:
        clip = smooth_clip(work.resolve() / "smooth" / f"smooth{args.smooth}.mp4", args.smooth,
                           *((90, 160) if args.quick else (720, 1280)))
    elif args.quick:
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
            if link.is_symlink() and not link.exists():
                link.unlink()  # broken (its target moved)
            if not link.exists():
                link.symlink_to(clip.resolve())
        folders[copies] = folder
    return folders


def run_variant(name: str, launch: Launch, folders: dict, args) -> dict:
    """--repeats one-process runs of a variant (later ones compared with the first) and, with
    --gpus N, one run on N processes compared with the first."""
    extra, env, mods = variant(name)
    extra += ["--split", args.split] if args.split else []
    src = folders[2 if "compile" in mods else 1]
    dst = [launch.work / f"out_{name}_1p_{k}" for k in range(args.repeats)]
    runs = []
    for d in dst:
        prof = launch.work / f"{d.name}_profile.json"
        runs.append(step1(launch, 1, src, d, args.quick,
                          extra + (["--profile", prof] if "profile" in mods else []), env))
        if "profile" in mods:
            runs[-1]["profile"] = profile_summary(prof)
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
    p.add_argument("--smooth", type=int, default=None,
                   help="one smooth 1280x720 clip of N frames instead of --input_dir's clips")
    p.add_argument("--psnr", default="",
                   help="A:B,... PSNR of variant B's outputs against variant A's")
    p.add_argument("--summary_into", default=None,
                   help="merge the summary keys of these runs into this JSON file")
    args = parse(p, argv)
    launch = prepare(args.work, args.quick, args.light)
    folders = inputs(args, launch.work)
    res = record(args, "cpu" if args.quick else default_device())
    res["runs"], res["psnr"] = {}, {}
    label = f"smooth{args.smooth}" if args.smooth else "quick" if args.quick else \
        Path(args.clip).stem if args.clip \
        else f"concat{args.concat}" if args.concat is not None else "five_clips"
    for name in args.variants.split(","):
        res["runs"][name] = run_variant(name, launch, folders, args)
        summary_so_far(res, args, label)  # kept when a later variant fails or time runs out
    for pair in filter(None, args.psnr.split(",")):
        a, b = pair.split(":")
        res["psnr"][pair] = psnr_outputs(launch.work / f"out_{a}_1p_0",
                                         launch.work / f"out_{b}_1p_0")
    summary_so_far(res, args, label)
    return save(res, args, NAME)


if __name__ == "__main__":
    main()
