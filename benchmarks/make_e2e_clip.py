"""Build the 121-frame 1280x720 benchmark clip: testdata/1.mp4 (90 frames) + 31 frames of 2.mp4.

    python benchmarks/make_e2e_clip.py videos_for_test/input OUT_DIR
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from Wan_SR.data import video_io  # noqa: E402


def main(src, out_dir, n=121):
    src = Path(src)
    frames = []
    for name in ("1.mp4", "2.mp4"):
        for chunk in video_io.iter_frames(src / name):
            frames.extend(chunk)
            if len(frames) >= n:
                break
        if len(frames) >= n:
            break
    out = Path(out_dir) / f"clip{n}.mp4"
    video_io.write_video(out, np.stack(frames[:n]), fps=30)
    print(out, video_io.probe(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
