"""Faults cost no work and no correctness in training: bad rows under two processes (every
per-sample decision taken alike on every process), saves whatever the sample, a dataset with no
readable row, the watchdog, Ctrl-C, stale partial files, TensorBoard after a resume."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT
from test_train_base import config, history, one_thread, run, weights
from Wan_SR.data.video_io import write_video


def _clip(n, i=0):
    t, y, x = np.arange(n)[:, None, None, None], np.arange(32)[None, :, None, None], \
        np.arange(48)[None, None, :, None]
    c = ((x * 5 + y * 3 + t * 7 + np.arange(3) * 40 + i * 50) % 256).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(c, (n, 32, 48, 3)))


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory):
    """Two good clips, a corrupt clip, a missing file, an image and a 2-frame clip (one frame
    after rounding to 4n+1: a single latent frame, no regulariser or discriminator for it)."""
    import cv2

    root = tmp_path_factory.mktemp("bad_data")
    for i in range(2):
        write_video(root / f"c{i}.mp4", _clip(9, i), fps=24)
    write_video(root / "short.mp4", _clip(2, 3), fps=24)
    cv2.imwrite(str(root / "img.png"), _clip(1, 4)[0])
    (root / "bad.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    rows = ["video,prompt", "c0.mp4,a", "bad.mp4,b", "missing.mp4,c", "img.png,d", "c1.mp4,e",
            "short.mp4,f"]
    (root / "meta.csv").write_text("\n".join(rows) + "\n")
    return root


LOSSES = ["--alpha_adv", "0.01", "--start_adv_step", "1", "--alpha_pixel_lpips", "0",
          "--pixel_crop", "2"]


def _argv(data, tiny_paths, out, steps, *extra):
    return [str(ROOT / "train_base.py"), "--dataset_base_path", str(data),
            "--dataset_metadata_path", str(data / "meta.csv"),
            "--wan_model_dir", str(tiny_paths["wan_dir"]), "--num_frames", "9", "--height", "32",
            "--width", "48", "--dataset_repeat", "2", "--max_train_steps", str(steps),
            "--mixed_precision", "no", "--report_to", "none", "--output_path", str(out),
            "--lora_rank", "4", "--learning_rate", "1e-3", "--dataloader_num_workers", "0",
            "--prompt_cache_dir", str(out.parent / "pc"), "--save_steps", "2", "--no_progress",
            "--load_model_discriminator_from", str(tiny_paths["discriminator"]), *LOSSES, *extra]


def _env(**kw):
    return dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
                **kw)


def test_bad_rows_under_two_processes_train_to_the_end(tiny_paths, bad_data, tmp_path):
    """torchrun, 2 processes (gloo): the corrupt clip is replaced, the image and the short clip
    make the processes' samples differ in what they can have; the run ends with identical
    weights on both processes, and one process accumulating two samples per step, stopped in
    the middle and resumed, ends with the same weights."""
    out = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(29600 + os.getpid() % 300),
            *_argv(bad_data, tiny_paths, out, 4)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env=_env(PSSR_DUMP_RANK_WEIGHTS=str(out / "rank")))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipped sample bad.mp4" in r.stderr and "missing.mp4" in r.stderr
    ranks = [weights(out / f"rank{i}.safetensors") for i in range(2)]
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    logged = history(out)
    assert [h["step"] for h in logged] == [1, 2, 3, 4]
    assert any("loss_discriminator" in h for h in logged)  # a clip reached the discriminator
    assert (out / "state" / "step-0000004").is_dir()
    # the narrow discriminator of --load_model_discriminator_from was trained and saved
    assert weights(out / "latest_discriminator.safetensors")["classifier.0.weight"].shape == \
        (8, 8 * 7 * 7)

    over = dict(dataset_base_path=str(bad_data), dataset_metadata_path=str(bad_data / "meta.csv"),
                dataset_repeat=2, save_steps=2, gradient_accumulation_steps=2, alpha_adv=0.01,
                start_adv_step=1, load_model_discriminator_from=str(tiny_paths["discriminator"]))
    with one_thread():  # as each of the two processes
        run(config(tiny_paths, bad_data, tmp_path / "acc", **dict(over, max_train_steps=2)))
        run(config(tiny_paths, bad_data, tmp_path / "acc",
                   **dict(over, max_train_steps=4, resume_from_checkpoint="latest")))
    for kind in ("base", "reg", "discriminator"):
        ref = weights(out / f"latest_{kind}.safetensors")
        got = weights(tmp_path / "acc" / f"latest_{kind}.safetensors")
        for k in ref:
            assert torch.allclose(got[k], ref[k], atol=1e-6, rtol=0), (kind, k)


def test_no_readable_row_stops_with_a_clear_error_and_saves_on_time(tiny_paths, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (data / name).write_bytes(b"garbage" * 100)
    (data / "meta.csv").write_text("video,prompt\na.mp4,x\nb.mp4,y\n")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, *_argv(data, tiny_paths, out, 30, "--dataset_repeat",
                                                "20")],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env())
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "10 steps in a row had no readable sample" in last and "a.mp4" in last
    assert "Traceback" not in r.stderr
    # saves happened on their steps although nothing could be trained
    assert (out / "state" / "step-0000008").is_dir() and (out / "latest_base.safetensors").is_file()


def test_watchdog_names_the_step_and_the_process(tmp_path):
    code = ("import time; from Wan_SR.core.distributed import Watchdog\n"
            "with Watchdog().watch('step 7', 0.5):\n    time.sleep(30)\n")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=ROOT, env=_env(RANK="1", WORLD_SIZE="2"))
    assert r.returncode == 3 and time.time() - t0 < 20
    assert "step 7, process 1 of 2: not done after 0.5 s (--collective_timeout)" in r.stderr
    ok = subprocess.run([sys.executable, "-c", code.replace("30", "0.01")], timeout=60, cwd=ROOT,
                        env=_env())
    assert ok.returncode == 0


def test_ctrl_c_ends_with_one_line_and_the_resume_command(tiny_paths, bad_data, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, *_argv(bad_data, tiny_paths, out, 1000)],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=_env())
    deadline = time.time() + 300
    while not (out / "state" / "step-0000002").is_dir() and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("ERROR interrupted at step ") and "the last saved state is step" in last
    assert last.endswith("--resume_from_checkpoint latest") and "train_base.py" in last


def test_stale_partials_removed_and_tensorboard_not_doubled_after_resume(tiny_paths, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    data = tmp_path / "d"
    data.mkdir()
    for i in range(2):
        write_video(data / f"c{i}.mp4", _clip(9, i), fps=24)
    (data / "meta.csv").write_text("video,prompt\nc0.mp4,a\nc1.mp4,b\n")
    cfg = dict(report_to="tensorboard", save_steps=2, alpha_reg=0.0, dataset_repeat=4)
    run(config(tiny_paths, data, out, **dict(cfg, max_train_steps=4)))
    # a kill after step 4 was logged but before its save was complete
    import shutil

    shutil.rmtree(out / "state" / "step-0000004")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process that is gone
    stale = [out / f".latest_base.{gone.pid}.partial.safetensors",
             out / "state" / f".step-0000006.{gone.pid}.partial"]
    stale[0].write_bytes(b"half")
    stale[1].mkdir()
    run(config(tiny_paths, data, out, **dict(cfg, max_train_steps=4,
                                             resume_from_checkpoint="latest")))
    assert not any(p.exists() for p in stale)
    acc = EventAccumulator(str(out / "PS-SR"))
    acc.Reload()
    steps = [e.step for e in acc.Scalars("loss")]
    assert steps == [1, 2, 3, 4], steps
    assert [h["step"] for h in history(out)] == [1, 2, 3, 4]


@pytest.mark.parametrize("fused", [True, False])
def test_a_non_finite_loss_skips_the_update_and_is_counted_after_the_step(fused):
    """Fused AdamW: skipped on the device (found_inf), counted by settle(); the plain optimiser
    (the release's) skips on the host. Either way the weights, the moments and the step count
    stay as they were, and the next finite loss updates."""
    from types import SimpleNamespace

    from Wan_SR.training.engine import Trained, Updates

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, fused=fused or None)
    acc = SimpleNamespace(sync_gradients=True, device=torch.device("cpu"), num_processes=1,
                          backward=lambda loss: loss.backward(),
                          clip_grad_norm_=torch.nn.utils.clip_grad_norm_)
    model = Trained(net, net, list(net.parameters()), opt)
    u = Updates(acc, max_grad_norm=1.0)
    x = torch.randn(4, 3)

    def update(scale):
        u.backward(net(x).square().mean() * scale, model, 1, "test")
        u.apply(model, 1, "test")

    update(1.0)
    after_one = [p.detach().clone() for p in net.parameters()]
    moments = [opt.state[p]["exp_avg"].clone() for p in net.parameters()]
    assert u.settle() == 0
    update(float("nan"))
    assert u.skipped == 0 and u.settle() == 1 and u.skipped == 1
    assert all(torch.equal(a, p) for a, p in zip(after_one, net.parameters()))
    assert all(torch.equal(m, opt.state[p]["exp_avg"]) for m, p in zip(moments, net.parameters()))
    assert all(float(opt.state[p]["step"]) == 1 for p in net.parameters())
    assert all(p.grad is None for p in net.parameters())
    update(1.0)
    assert u.settle() == 0 and not torch.equal(after_one[0], net.weight)
    assert opt.defaults.get("fused") is (True if fused else None)
