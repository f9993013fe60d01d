"""Shared fixtures: tiny random checkpoints in the official layouts, written once per session."""
import os
import sys
import warnings
from pathlib import Path

# MKL's matrix products round differently depending on how their buffers are aligned in memory;
# its "conditional numerical reproducibility" mode makes them independent of it, so two runs of
# the same computation (one process, or several) give the same bits. The tests that compare
# training runs need it: Adam turns a last-bit difference in a near-zero gradient into a
# visible weight difference. Set before torch calls MKL; child processes inherit it.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONFORMANCE = FIXTURES / "conformance"
warnings.filterwarnings("ignore", message=".*pynvml.*")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """Root folder holding dependent_models/ and checkpoints/ with tiny random weights."""
    from Wan_SR.testing.checkpoints import make_checkpoints, write_tiny_discriminator

    root = tmp_path_factory.mktemp("tiny")
    make_checkpoints(root, "tiny", seed=0, log=lambda *a: None)
    write_tiny_discriminator(root / "checkpoints" / "pretrained_models" /
                             "discriminator.safetensors")
    return root


@pytest.fixture(scope="session")
def tiny_paths(tiny_root):
    wan = tiny_root / "dependent_models" / "Wan2.1-T2V-1.3B"
    ck = tiny_root / "checkpoints" / "pretrained_models"
    return dict(wan_dir=wan, dit=wan / "diffusion_pytorch_model.safetensors",
                vae=wan / "Wan2.1_VAE.pth", t5=wan / "models_t5_umt5-xxl-enc-bf16.pth",
                tokenizer=wan / "google" / "umt5-xxl", base=ck / "base.safetensors",
                draft=ck / "draft.safetensors",
                discriminator=ck / "discriminator.safetensors")  # a narrow one (training tests)


@pytest.fixture(scope="session")
def pipe(tiny_paths, tmp_path_factory):
    """A float32 CPU PSSRPipeline on the tiny checkpoints, loaded through the public loader."""
    import torch

    from Wan_SR.models.wan import resolve_wan_files
    from Wan_SR.sampling.pipeline import PSSRPipeline, SamplingConfig

    files = resolve_wan_files(str(tiny_paths["wan_dir"]))
    return PSSRPipeline.from_files(
        files, tiny_paths["base"], tiny_paths["draft"], prompt="a test prompt",
        negative_prompt="bad", config=SamplingConfig(), device="cpu", dtype=torch.float32,
        cache_dir=str(tmp_path_factory.mktemp("pcache")))


@pytest.fixture(autouse=True)
def _isolated_prompt_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PSSR_CACHE_DIR", str(tmp_path / "cache"))


def kill_when(cmd, ready, timeout=300, **popen_kw) -> str:
    """Run ``cmd`` in a session of its own and SIGKILL the whole session (the script and its
    ffmpeg children, as a crash would) as soon as ``ready()`` is true (polled every 2 ms).
    Returns what the script wrote to standard error; fails when it ends or times out first."""
    import os
    import signal
    import subprocess
    import tempfile
    import time

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, **popen_kw)
        deadline = time.monotonic() + timeout
        try:
            while not ready():
                if proc.poll() is not None or time.monotonic() > deadline:
                    err.seek(0)
                    pytest.fail(f"{cmd[1]} ended or timed out before it was killed (exit "
                                f"{proc.returncode}):\n{err.read()[-3000:]}")
                time.sleep(0.002)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # ended on its own (reported above)
                pass
            proc.wait()
        err.seek(0)
        return err.read()


def same_frames(a, b) -> bool:
    """The two videos decode to the same frames."""
    import numpy as np

    from Wan_SR.data import video_io

    return np.array_equal(video_io.read_video(a), video_io.read_video(b))


def run_id(path):
    """The run that made output ``path`` (its record's run id; None without a record)."""
    import json

    from Wan_SR.runs.common import record_path

    try:
        return json.loads(record_path(path).read_text())["run_id"]
    except FileNotFoundError:
        return None


def check_resume_after_kills(cmd, outputs, what, tmp_path) -> None:
    """What ``--skip_existing`` must do after killed runs, for a script of three inputs 1, 2, 3
    and two settings A and B. ``cmd(which, out, *extra)``: its command line with the settings
    ``which``; ``outputs(folder, names)``: the outputs of the named inputs, in the order it
    writes them.

    Run A completes; run B into the same folder is killed (SIGKILL) right after its first
    input; A with --skip_existing keeps A's outputs of 2 and 3 and redoes 1 (B's). B is killed
    again after 1; B with --skip_existing keeps 1 and redoes 2 and 3. Every output equals the
    reference run of its settings, frame for frame."""
    import json
    import shutil
    import subprocess

    def run(which, out, *extra):
        r = subprocess.run(cmd(which, out, *extra), capture_output=True, text=True,
                           timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stderr

    def kill_b_after_1(folder):
        last = outputs(folder, "1")[-1]
        before = run_id(last)
        kill_when(cmd("B", folder), lambda: run_id(last) not in (before, None), cwd=ROOT)
        config = json.loads((folder / "run_config.json").read_text())
        assert "finished" not in config  # written at the start, never finished
        assert {run_id(p) for p in outputs(folder, "1")} == {config["run_id"]}
        assert all(run_id(p) != config["run_id"] for p in outputs(folder, "23")), \
            "run B was killed too late: input 2 was already done"

    def resume(which, keep, redo):
        kept = {p: p.stat().st_mtime_ns for p in outputs(out, keep)}
        log = run(which, out, "--skip_existing")
        n = len(outputs(out, redo))
        assert f"{what}: {len(redo)} done, {len(keep)} skipped (complete), 0 failed" in log, log
        assert f"{n} existing output(s) redone: {n} made with other settings" in log, log
        assert {p: p.stat().st_mtime_ns for p in kept} == kept
        assert all(same_frames(a, b) for a, b in zip(outputs(ref[which], "123"),
                                                     outputs(out, "123")))

    ref = {r: tmp_path / f"ref_{r}" for r in "AB"}
    for r, folder in ref.items():
        run(r, folder)
    assert not any(same_frames(a, b) for a, b in zip(outputs(ref["A"], "123"),
                                                     outputs(ref["B"], "123")))
    out = tmp_path / "out"
    shutil.copytree(ref["A"], out)  # records travel with their outputs
    kill_b_after_1(out)
    resume("A", keep="23", redo="1")
    kill_b_after_1(out)
    resume("B", keep="1", redo="23")
    assert not list(out.rglob("*.partial*"))  # the killed runs' temporary files are gone
    config = json.loads((out / "run_config.json").read_text())
    assert config["exit_status"] == 0 and "finished" in config
