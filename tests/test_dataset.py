"""VideoDataset and the random-access clip reader: metadata formats, sizes, frame counts,
prompts, bad rows, reproducible clip starts, paired LQ, DataLoader collate, and the reader
returning exactly the streaming reader's frames."""
import json
import subprocess

import numpy as np
import pytest
import torch

from Wan_SR.core.options import DEFAULT_PROMPT
from Wan_SR.data import video_io
from Wan_SR.data.clip_reader import ClipError, ClipReader, count_frames
from Wan_SR.data.dataset import (DatasetError, SkipReport, VideoDataset, collate_clips,
                                 cover_crop, make_dataloader, round_down_frames, target_size)

H, W = 64, 96


def _frames(n, h=H, w=W, seed=0):
    """Moving gradients, a different picture per frame."""
    yy, xx = np.mgrid[:h, :w]
    return np.stack([np.stack([(xx * 3 + t * 5) % 256, (yy * 4 + t * 3) % 256,
                               ((xx + yy) * 2 + t * 7 + seed * 40) % 256], -1).astype(np.uint8)
                     for t in range(n)])


def write_gop_video(path, frames, fps="25", gop=8, bframes=2):
    """H.264 mp4 with a forced key-frame interval and B-frames (ffmpeg of imageio-ffmpeg)."""
    _, h, w, _ = frames.shape
    cmd = [video_io.ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt",
           "rgb24", "-s", f"{w}x{h}", "-r", fps, "-i", "-", "-c:v", "libx264", "-g", str(gop),
           "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", str(bframes), "-pix_fmt",
           "yuv420p", str(path)]
    subprocess.run(cmd, input=frames.tobytes(), check=True)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_gop_video(root / "long.mp4", _frames(33))
    video_io.write_video(root / "short.mp4", _frames(11, seed=1), fps=25)
    video_io.write_video(root / "long_lq.mp4", _frames(33, 32, 48, seed=2), fps=25)
    import cv2
    cv2.imwrite(str(root / "still.png"), _frames(1, 40, 80)[0][..., ::-1])
    (root / "broken.mp4").write_bytes(b"not a video at all" * 50)
    (root / "notes.doc").write_bytes(b"x")
    return root


def test_random_access_reader_matches_streaming_reader(media):
    path = media / "long.mp4"
    ref = video_io.read_video(path)
    r = ClipReader(path)
    assert r.num_frames == 33 == len(ref) == count_frames(path)
    assert r.index.key_pts and len(r.index.key_pts) >= 4  # short GOP: several key frames
    for start in range(0, 33, 3):
        for count in (1, 5, 9):
            if start + count <= 33:
                assert np.array_equal(r.read(start, count), ref[start:start + count]), (start, count)
    r.read(28, 5)
    assert r.decoded_frames <= 14  # seeked to the key frame at 24, did not decode from 0
    with pytest.raises(ClipError, match="requested"):
        r.read(30, 5)
    img = ClipReader(media / "still.png")
    assert img.num_frames == 1 and img.read(0, 1).shape == (1, 40, 80, 3)


def _csv(path, rows, header=("video", "prompt", "LQ_video")):
    import csv
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(r)
    return path


ROWS = [("long.mp4", "a long clip", ""), ("short.mp4", "", ""), ("still.png", "a still", ""),
        ("long.mp4", "paired", "long_lq.mp4")]


def _write_meta(media, tmp_path, fmt):
    if fmt == "csv":
        return _csv(tmp_path / "meta.csv", ROWS)
    objs = [{"video": v, **({"prompt": p} if p else {}), **({"LQ_video": lq} if lq else {})}
            for v, p, lq in ROWS]
    if fmt == "json":
        p = tmp_path / "meta.json"
        p.write_text(json.dumps(objs))
        return p
    p = tmp_path / "meta.jsonl"
    p.write_text("\n".join(json.dumps(o) for o in objs) + "\n")
    return p


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_metadata_rows_give_frames_size_and_prompt(media, tmp_path, fmt):
    meta = _write_meta(media, tmp_path, fmt)
    ds = VideoDataset(media, meta, num_frames=9, height=32, width=48, seed=1)
    assert len(ds) == 4 and not ds.bad_rows
    s = [ds[i] for i in range(4)]
    assert s[0]["video"].shape == (9, 3, 32, 48) and s[0]["video"].dtype == torch.uint8
    assert s[0]["prompt"] == "a long clip" and s[0]["LQ_video"] is None
    assert s[1]["video"].shape == (9, 3, 32, 48)  # 11 frames: a 9-frame clip
    assert s[1]["prompt"] == DEFAULT_PROMPT
    assert s[2]["video"].shape == (1, 3, 32, 48) and s[2]["prompt"] == "a still"
    assert s[3]["LQ_video"].shape == s[3]["video"].shape == (9, 3, 32, 48)
    assert s[3]["name"] == "long.mp4"


def test_short_video_rounds_down_to_4n_plus_1_and_dynamic_size(media, tmp_path):
    meta = _csv(tmp_path / "m.csv", [("short.mp4", "p", ""), ("long.mp4", "q", "")])
    ds = VideoDataset(media, meta, num_frames=33, max_pixels=H * W // 4, repeat=2)
    assert len(ds) == 4
    a, b = ds[0], ds[1]
    assert a["video"].shape == (9, 3, 32, 48)  # 11 -> 9; 64x96 at 1/4 area -> 32x48
    assert b["video"].shape == (33, 3, 32, 48) and b["start"] == 0
    assert round_down_frames(11) == 9 and round_down_frames(33) == 33 and round_down_frames(4) == 1
    assert target_size(1080, 1920, 1280 * 720) == (720, 1280)
    assert target_size(100, 250, 10 ** 6) == (96, 240)
    ds = VideoDataset(media, meta, num_frames=5)  # dynamic, under the default max_pixels
    assert ds[1]["video"].shape == (5, 3, 64, 96)


def test_folder_with_txt_prompts(media, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("long.mp4", "still.png"):
        (folder / name).write_bytes((media / name).read_bytes())
    (folder / "long.txt").write_text("  prompt from a txt file \n")
    ds = VideoDataset(folder, None, num_frames=17, height=64, width=96)
    by_name = {ds[i]["name"]: ds[i] for i in range(len(ds))}
    assert set(by_name) == {"long.mp4", "still.png"}
    assert by_name["long.mp4"]["prompt"] == "prompt from a txt file"
    assert by_name["long.mp4"]["video"].shape == (17, 3, 64, 96)
    assert by_name["still.png"]["prompt"] == DEFAULT_PROMPT
    assert by_name["still.png"]["video"].shape == (1, 3, 64, 96)


def test_same_seed_epoch_index_gives_same_clip_and_frames_match_reader(media, tmp_path):
    meta = _csv(tmp_path / "m.csv", [("long.mp4", "p", "")])
    ds = VideoDataset(media, meta, num_frames=5, height=64, width=96, seed=7, repeat=8,
                      dtype=torch.float32)
    ref = video_io.read_video(media / "long.mp4")
    again = VideoDataset(media, meta, num_frames=5, height=64, width=96, seed=7, repeat=8,
                         dtype=torch.float32)
    starts = []
    for i in range(8):
        s = ds[i]
        assert torch.equal(s["video"], again[i]["video"])
        want = torch.from_numpy(ref[s["start"]:s["start"] + 5]).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(s["video"], want)  # no resize: exactly the streaming reader's frames
        starts.append(s["start"])
    assert len(set(starts)) > 1  # different indices, different clips
    ds.set_epoch(1)
    assert [ds[i]["start"] for i in range(8)] != starts
    ds.set_epoch(0)
    assert [ds[i]["start"] for i in range(8)] == starts
    other = VideoDataset(media, meta, num_frames=5, height=64, width=96, seed=8, repeat=8)
    assert [other[i]["start"] for i in range(8)] != starts


def test_paired_lq_uses_same_frames_and_hq_size(media, tmp_path):
    meta = _csv(tmp_path / "m.csv", [("long.mp4", "p", "long_lq.mp4")])
    ds = VideoDataset(media, meta, num_frames=9, height=64, width=96, seed=3, repeat=4)
    lq_ref = video_io.read_video(media / "long_lq.mp4")
    for i in range(4):
        s = ds[i]
        assert s["LQ_video"].shape == s["video"].shape == (9, 3, 64, 96)
        want = cover_crop(lq_ref[s["start"]:s["start"] + 9], 64, 96)
        assert torch.equal(s["LQ_video"], want)
    no_lq = VideoDataset(media, meta, num_frames=9, height=64, width=96,
                         data_file_keys=("video",))
    assert no_lq[0]["LQ_video"] is None


def test_bad_rows_are_counted_skipped_and_named(media, tmp_path, caplog):
    meta = tmp_path / "m.jsonl"
    meta.write_text("\n".join([
        json.dumps({"video": "long.mp4", "prompt": "ok"}),
        json.dumps({"video": "missing.mp4"}),
        json.dumps({"video": "notes.doc"}),
        json.dumps({"prompt": "no video"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"video": "long.mp4", "LQ_video": "gone.mp4"}),
        json.dumps({"video": "broken.mp4", "prompt": "corrupt file"}),
    ]) + "\n")
    with caplog.at_level("WARNING"):
        ds = VideoDataset(media, meta, num_frames=5, height=32, width=48)
    reasons = {b.name: b.reason for b in ds.bad_rows}
    assert len(ds.bad_rows) == 6 and len(ds) == 2
    assert "not found" in reasons["missing.mp4"]
    assert "unknown file type" in reasons["notes.doc"]
    assert "not found" in reasons["long.mp4"] and "LQ_video" in reasons["long.mp4"]
    assert any("not valid JSON" in r for r in reasons.values())
    assert "6 bad row(s)" in caplog.text and "missing.mp4" in caplog.text
    # the corrupt file fails when read: replaced by the next readable row, read with the
    # original index's generator (the same clip every time), the failure counted and named
    bad = ds[1]
    assert bad["name"] == "long.mp4" and "error" not in bad
    assert [n for n, _ in bad["replaced"]] == ["broken.mp4"]
    again = ds[1]
    assert again["start"] == bad["start"] and torch.equal(again["video"], bad["video"])
    batch = collate_clips([ds[0], bad])
    assert batch["video"].shape == (2, 5, 3, 32, 48) and batch["name"] == ["long.mp4"] * 2
    report = SkipReport()
    assert report.add(batch) == 1 and report.count == 1 and "broken.mp4" in report.summary()
    assert batch["skipped"][0][2] == "long.mp4"  # what replaced it


def test_a_sample_is_given_up_only_when_every_row_tried_fails(media, tmp_path):
    import Wan_SR.data.dataset as dataset

    meta = _csv(tmp_path / "m.csv", [("broken.mp4", "p", "")] * 3)
    ds = VideoDataset(media, meta, num_frames=5, height=32, width=48)
    s = ds[0]
    assert "error" in s and len(s["replaced"]) == 3 and s["name"] == "broken.mp4"
    batch = collate_clips([s])
    assert batch["name"] == [] and len(batch["skipped"]) == 3
    assert batch["skipped"][0][2] is None  # nothing replaced it
    assert dataset.MAX_TRIES < 100  # a bad dataset costs a bounded number of reads per sample


def test_argument_errors_are_clear(media, tmp_path):
    meta = _csv(tmp_path / "m.csv", [("long.mp4", "p", "")])
    with pytest.raises(DatasetError, match="4n\\+1"):
        VideoDataset(media, meta, num_frames=32)
    with pytest.raises(DatasetError, match="both --height and --width"):
        VideoDataset(media, meta, num_frames=33, height=64)
    with pytest.raises(DatasetError, match="multiples of 16"):
        VideoDataset(media, meta, num_frames=33, height=60, width=96)
    with pytest.raises(DatasetError, match="not found"):
        VideoDataset(media, tmp_path / "nope.csv")
    empty = _csv(tmp_path / "e.csv", [("missing.mp4", "p", "")])
    with pytest.raises(DatasetError, match="no usable rows"):
        VideoDataset(media, empty)
    bad_json = tmp_path / "m.json"
    bad_json.write_text(json.dumps({"video": "long.mp4"}))
    with pytest.raises(DatasetError, match="list of row objects"):
        VideoDataset(media, bad_json)


def test_dataloader_workers_keep_tensors(media, tmp_path):
    meta = _csv(tmp_path / "m.csv", [("long.mp4", "p", ""), ("short.mp4", "q", ""),
                                     ("broken.mp4", "r", "")])
    ds = VideoDataset(media, meta, num_frames=5, height=32, width=48, repeat=2)
    dl = make_dataloader(ds, batch_size=2, num_workers=1, shuffle=True, seed=0)
    seen, skipped = 0, 0
    for batch in dl:
        if batch["name"]:
            assert isinstance(batch["video"], torch.Tensor)
            assert batch["video"].shape[1:] == (5, 3, 32, 48)
        seen += len(batch["name"])
        skipped += len(batch["skipped"])
    assert seen == 6 and skipped == 2  # the broken row's two samples are replaced
