"""The web app (app.py, Wan_SR/app) on tiny random checkpoints: started on a free localhost port
as a user starts it, driven through gradio_client (restore, tune, download, compare, bad
uploads, paths in requests) and through a real headless Chromium (skipped, with the reason,
where Playwright or a chromium binary is missing; .ci/run installs both)."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import same_frames
from Wan_SR.data import video_io
from Wan_SR.fusion.frequency import fuse_video

gradio_client = pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")
from gradio_client import Client, handle_file  # noqa: E402  (after the skip above)

ROOT = Path(__file__).resolve().parents[1]
N, H, W, FPS = 9, 48, 40, 24
MAX_FRAMES, MAX_MB = 12, 1.0
ALL = ["base", "base+draft_1", "base+draft_2", "base+draft_3", "final"]


def make_clip(path, n=N, seed=0):
    rng = np.random.default_rng(seed)
    t, y, x = np.arange(n)[:, None, None], np.arange(H)[None, :, None], np.arange(W)[None, None]
    base = np.stack(np.broadcast_arrays(128 + 90 * np.sin((x + 2 * t) / 5),
                                        128 + 90 * np.cos((y - t) / 4),
                                        (3 * x + 2 * y + 5 * t) % 256), -1)
    frames = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    video_io.write_video(path, frames, fps=FPS)
    return Path(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc, url, work, clip, folder, log):
        self.proc, self.url, self.work, self.clip, self.folder, self.log = \
            proc, url, work, clip, folder, log

    def client(self, tmp_path) -> Client:
        return Client(self.url, verbose=False, download_files=str(tmp_path / "downloads"))


@pytest.fixture(scope="module")
def server(tiny_paths, tmp_path_factory):
    """``app.py`` on a free port (cwd: an empty folder holding a file no request may read)."""
    tmp = tmp_path_factory.mktemp("app")
    clip = make_clip(tmp / "clips" / "clip.mp4")
    gt = tmp / "gt"
    gt.mkdir()
    shutil.copy(clip, gt / "clip.mp4")  # the input as "ground truth" for Compare
    (tmp / "cwd").mkdir()
    (tmp / "cwd" / "secret.txt").write_text("not for the page")
    port, work, log = free_port(), tmp / "work", tmp / "app.log"
    cmd = [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--work_dir", str(work),
           "--wan_model_dir", str(tiny_paths["wan_dir"]), "--lora_base_path",
           str(tiny_paths["base"]), "--lora_draft_path", str(tiny_paths["draft"]),
           "--torch_dtype", "float32", "--device", "cpu", "--window_t", "5", "--overlap_t", "1",
           "--window_h", "32", "--overlap_h", "16", "--window_w", "32", "--overlap_w", "16",
           "--prompt_cache_dir", str(tmp / "pc"), "--compare_dir", str(gt),
           "--input_dir", str(clip.parent),
           "--max_frames", str(MAX_FRAMES), "--max_upload_mb", str(MAX_MB)]
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=tmp / "cwd", stdout=err, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the app did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    srv = Server(proc, url, work, clip, gt, log)
    yield srv
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def restore(client, clip, outputs=ALL, seed=0, full=False):
    """The /restore endpoint: (status, downloads {branch: path}) (``full``: and every value)."""
    r = client.predict(handle_file(str(clip)), None, outputs, False, 1.0, "pixel", seed, False,
                       api_name="/restore")
    status, files = r[0], r[6]
    out = status, {b: Path(f) for b, f in zip(outputs, files or [])}
    return (*out, r) if full else out


def as_tensor(frame):
    return video_io.frames_to_tensor(np.asarray(frame)[None])


def image(value) -> np.ndarray:
    """An image the app sent (a downloaded png path)."""
    return np.asarray(Image.open(value).convert("RGB"))


def test_restore_tune_and_download(server, tmp_path):
    """Restore a clip: every output has the input's frame count, size and fps; the viewer
    shows the decoded frame; the tuned frame is step 2's fusion of that frame, and changes with
    alpha; the whole-clip download equals inference_step_2.py with the same values."""
    client = server.client(tmp_path)
    status, files = restore(client, server.clip)
    assert status.startswith("Restored **clip** (9 frames"), status
    for branch, path in files.items():
        info = video_io.probe(path)
        assert (info.num_frames, info.width, info.height, info.rate) == (N, W, H, "24/1"), branch
    before, after = client.predict("base", 4, api_name="/view")[0]
    assert np.array_equal(image(after), video_io.read_frame(files["base"], 4))
    assert np.array_equal(image(before), video_io.read_frame(server.clip, 4))

    base, draft = (video_io.read_frame(files[b], 4) for b in ("base", "base+draft_3"))
    shown = {}
    for alpha in (0.6, 1.5):
        (b, fused), msg = client.predict(4, alpha, 0.2, 2, 2, api_name="/tune_frame")
        assert np.array_equal(image(b), base) and f"alpha {alpha:g}" in msg
        shown[alpha] = image(fused)
        ref = fuse_video(as_tensor(base), as_tensor(draft), alpha=alpha, fc=0.2, order=2,
                         border=2)
        assert np.array_equal(shown[alpha], video_io.tensor_to_frames(ref)[0])
    assert np.abs(shown[0.6].astype(int) - shown[1.5]).mean() > 0.5

    tuned, command, msg = client.predict(1.3, 0.25, 3, 1, api_name="/fuse_clip")
    assert "inference_step_2.py" in msg and "--alpha 1.3 --fc 0.25 --order 3 --border 1" in command
    cons, sharp = tmp_path / "c", tmp_path / "s"
    for folder, branch in ((cons, "base"), (sharp, "base+draft_3")):
        folder.mkdir()
        shutil.copy(files[branch], folder / "clip.mp4")
    r = subprocess.run([sys.executable, str(ROOT / "inference_step_2.py"), "--consistent_dir",
                        str(cons), "--sharp_dir", str(sharp), "--output_dir", str(tmp_path / "o"),
                        "--alpha", "1.3", "--fc", "0.25", "--order", "3", "--border", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert video_io.probe(tuned).num_frames == N
    assert same_frames(tuned, tmp_path / "o" / "clip.mp4")
    assert not same_frames(tuned, files["final"])  # other values than step 1's final


def test_compare_matches_by_name_and_scores_each_frame(server, tmp_path):
    """Compare the clip (as ground truth) with a run's base output: matched by name, PSNR per
    frame as eval_metrics computes it (checked by hand on the decoded frames)."""
    client = server.client(tmp_path)
    _, files, r = restore(client, server.clip, outputs=["base", "base+draft_3"], full=True)
    labels = [c[0] for c in r[-1]["choices"]]
    assert server.folder.name in labels
    run = [lb for lb in labels if lb.endswith("/base")][-1]
    names, msg = client.predict(server.folder.name, run, api_name="/match")
    assert "1 video(s) matched" in msg and names["value"] == "clip"
    psnr, ssim, summary, _ = client.predict(server.folder.name, run, "clip", api_name="/scores")
    values = [row[1] for row in psnr["data"]]
    assert len(values) == N and len(ssim["data"]) == N
    gt, pred = (video_io.read_video(p).astype(np.float64) for p in (server.clip, files["base"]))
    mse = ((gt - pred) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(values, 10 * np.log10(255 ** 2 / mse), rtol=1e-9)
    assert f"mean PSNR {np.mean(values):.2f} dB" in summary
    left, right, _ = client.predict(server.folder.name, run, "clip", 5, api_name="/compare_frame")
    assert np.array_equal(image(left), video_io.read_frame(server.clip, 5))
    assert np.array_equal(image(right), video_io.read_frame(files["base"], 5))


def test_bad_uploads_give_a_message_and_the_next_job_works(server, tmp_path):
    client = server.client(tmp_path)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    status, _ = restore(client, bad)
    assert "broken.mp4: not a readable video" in status, status
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    status, _ = restore(client, empty)
    assert status.startswith("**Not done:**") and "empty" in status, status
    status, _ = restore(client, make_clip(tmp_path / "long.mp4", n=MAX_FRAMES + 2))
    assert f"14 frames is over the limit of {MAX_FRAMES}" in status, status
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * int(MAX_MB * 1e6 * 1.5))
    with pytest.raises(Exception, match="exceeds the maximum file size of 1000000 bytes"):
        restore(client, big)  # gradio_client checks the page's limit before sending
    before = sorted(server.work.rglob("*"))
    with open(big, "rb") as f:  # the server refuses it too, and keeps nothing of it
        r = httpx.post(server.url + "gradio_api/upload", files={"files": ("big.mp4", f)},
                       timeout=30)
    assert r.status_code == 413 and "exceeded maximum allowed size" in r.text, r.text
    assert sorted(server.work.rglob("*")) == before
    # the next job works (a video of --input_dir, picked by name)
    r = client.predict(None, "clip.mp4", ["base"], False, 1.0, "pixel", 0, False,
                       api_name="/restore")
    assert r[0].startswith("Restored **clip** (9 frames"), r[0]
    assert same_frames(r[6][0], restore(client, server.clip, outputs=["base"])[1]["base"])
    assert server.proc.poll() is None


def test_requests_cannot_reach_the_filesystem(server, tmp_path):
    """Files are served from the workspace only; a path sent as an upload, a name that is not
    in a list, or a folder label that was not given are refused."""
    api = server.url + "gradio_api/"
    for path in ("/etc/passwd", str(server.log.parent / "cwd" / "secret.txt"),
                 str(ROOT / "README.md"), "../../../../etc/passwd"):
        r = httpx.get(api + "file=" + path, timeout=10)
        assert r.status_code in (403, 404), (path, r.status_code)
        assert "root:" not in r.text and "not for the page" not in r.text
    fake = {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}, "orig_name": "x.mp4"}
    r = httpx.post(api + "call/restore", json={"data": [fake, None, ["base"], False, 1.0,
                                                         "pixel", 0, False]}, timeout=10)
    events = httpx.get(api + f"call/restore/{r.json()['event_id']}", timeout=60).text
    assert "event: error" in events and "root:" not in events, events[-500:]
    client = server.client(tmp_path)
    with pytest.raises(Exception, match="not in the list of choices"):
        client.predict(None, "../../etc/passwd", ["base"], False, 1.0, "pixel", 0, False,
                       api_name="/restore")
    with pytest.raises(Exception, match="not in the list of choices"):
        client.predict("/etc", str(server.folder), api_name="/match")


def test_page_in_a_real_browser(server, tmp_path):
    """Headless Chromium: upload a clip, run, see the before/after viewer; on the Tune tab move
    alpha and the shown frame changes; a screenshot is kept (``tmp_path/app.png``; with
    PSSR_README_SCREENSHOT=1 also docs/app.png)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium binary on PATH (.ci/run installs Debian's chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            drive_page(page, server, tmp_path)
        finally:
            browser.close()


def drive_page(page, server, tmp_path):
    page.goto(server.url)
    # the page must be rendered before a file is given to its input (on a slow first load the
    # file could otherwise go unseen); Gradio's own connection never lets the network idle
    page.locator("#pssr-run").wait_for(state="visible", timeout=120_000)
    run_clip(page, server.clip)
    viewer = page.locator("#pssr-viewer img")
    viewer.first.wait_for(state="visible", timeout=30_000)
    assert viewer.count() == 2  # before and after
    page.locator("#pssr-frame input[type=range]").fill("4")
    page.wait_for_timeout(1000)
    # the players follow each other: seeking the input seeks the output
    page.wait_for_function("() => { const v = document.querySelectorAll('#pssr-players video');"
                           " return v.length == 2 && v[0].readyState >= 1 && "
                           "v[1].readyState >= 1 && v[1].dataset.pssrSync; }", timeout=30_000)
    page.evaluate("() => { document.querySelectorAll('#pssr-players video')[0].currentTime ="
                  " 0.2; }")
    page.wait_for_function("() => Math.abs(document.querySelectorAll('#pssr-players video')[1]"
                           ".currentTime - 0.2) < 0.05", timeout=10_000)
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
    if os.environ.get("PSSR_README_SCREENSHOT") == "1":
        shutil.copy(tmp_path / "app.png", ROOT / "docs" / "app.png")
    print(f"screenshots in {tmp_path}")

    page.get_by_role("tab", name="Tune").click()  # shows the current frame fused
    fused = page.locator("#pssr-tune-viewer img").last
    fused.wait_for(state="visible", timeout=30_000)
    first = fused.get_attribute("src")
    page.locator("#pssr-alpha input[type=range]").fill("1.8")
    page.wait_for_function("([sel, old]) => { const i = document.querySelectorAll(sel); "
                           "return i.length && i[i.length - 1].src !== old; }",
                           arg=["#pssr-tune-viewer img", first], timeout=30_000)
    assert "alpha 1.8" in page.locator("#pssr-tune-status").inner_text()
    page.screenshot(path=str(tmp_path / "app_tune.png"), full_page=True)

    # an oversize upload and a corrupt one each say why in the page; the next job runs
    page.get_by_role("tab", name="Restore").click()
    page.locator("#pssr-upload button[aria-label='Clear']").click()
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * int(MAX_MB * 1e6 * 1.5))
    page.locator("#pssr-upload input[type=file]").set_input_files(str(big))
    page.get_by_text("File size exceeds the maximum allowed size of 1000000 bytes: big.mp4") \
        .wait_for(timeout=30_000)
    clear_upload(page)  # the refused file may or may not stay in the component
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(2).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    run_clip(page, bad, "broken.mp4: not a readable video")
    clear_upload(page)
    run_clip(page, server.clip, "Restored clip (9 frames, 40x48 at 24/1 fps) as run")
    page.screenshot(path=str(tmp_path / "app_errors.png"), full_page=True)


def clear_upload(page) -> None:
    """Empty the upload component (its Clear button when it holds a file) and wait until it
    offers its file input again."""
    given = page.locator("#pssr-upload input[type=file]")
    if not given.count():  # it holds a file (an empty one keeps a Clear button under its drop area)
        page.locator("#pssr-upload button[aria-label='Clear']").first.click()
    given.wait_for(state="attached", timeout=60_000)


def run_clip(page, clip, expect="Restored clip"):
    """Upload ``clip``, press Restore, wait for ``expect`` in the page."""
    name = Path(clip).name
    # the component lists the file it holds in a cell labelled with its name (its text is split
    # in stem and extension; the name as one text shows only while the upload runs)
    shown = page.locator(f"#pssr-upload [aria-label='{name}']")
    given = page.locator("#pssr-upload input[type=file]")
    for attempt in range(2):  # a file given while the page still loads can go unseen: once more
        given.set_input_files(str(clip), timeout=120_000)
        try:
            shown.wait_for(timeout=45_000)
            break
        except Exception as e:  # Playwright's TimeoutError (Playwright is imported in the test)
            if attempt or "Timeout" not in type(e).__name__:
                raise
    page.locator("#pssr-run").click()
    page.get_by_text(expect).last.wait_for(timeout=90_000)


def test_job_settings_are_built_from_the_option_classes(pipe, tmp_path):
    """The page's per-job settings are fields of the option dataclasses, applied onto the start
    config; bad values are refused with the option's own message; uploads come only from the
    upload folder; a given --work_dir must be empty."""
    from Wan_SR.app.restore import job_config, job_fields
    from Wan_SR.app.safety import UserError, Workspace, check_upload
    from Wan_SR.core.options import Step1Config

    assert [(part, f.name) for part, f in job_fields()] == [
        ("step1", "upscale"), ("step1", "window_space"), ("sampling", "seed")]
    cfg = job_config(Step1Config(), {"upscale": 2, "seed": 3.0, "window_space": "latent"},
                     ["base", "final"])
    assert (cfg.step1.upscale, cfg.sampling.seed, cfg.step1.window_space) == (2.0, 3, "latent")
    assert cfg.step1.resolve_outputs(3) == ["base", "final"]
    for values, outputs, msg in (({"upscale": -1}, ["base"], "--upscale must be positive"),
                                 ({}, [], "choose at least one output"),
                                 ({"window_space": "bad"}, ["base"], "--window_space must be")):
        with pytest.raises(UserError, match=msg):
            job_config(Step1Config(), values, outputs)

    ws = Workspace(str(tmp_path / "w"))
    clip = make_clip(tmp_path / "elsewhere" / "a.mp4")
    with pytest.raises(UserError, match="not an upload of this app"):
        check_upload(clip, ws.uploads, 10, 100)
    shutil.copy(clip, ws.uploads / "a.mp4")
    assert check_upload(ws.uploads / "a.mp4", ws.uploads, 10, 100).num_frames == N
    ws.cleanup()
    assert not ws.uploads.exists() and (tmp_path / "w").exists()  # the given folder stays
    (tmp_path / "w" / "mine.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        Workspace(str(tmp_path / "w"))


def test_temporary_files_go_on_exit(server):
    """Last: SIGTERM ends the app and what it wrote in --work_dir is gone."""
    assert any((server.work / "runs").iterdir())
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=60)
    assert not (server.work / "runs").exists() and not (server.work / "uploads").exists(), \
        server.log.read_text()[-2000:]
