"""The frequency-domain update of step 2 and of ``--final`` in step 1 (docs/method.md §7): keep
the low band of the consistent (base) branch and mix in the high band of the sharp branch, on
the luma channel only, with a Butterworth low-pass. Entry points: :func:`fuse_video` ((T, 3, H,
W) frames in [0, 1], tile by tile) and :func:`fuse_frames` (whole frames); the masks and colour
conversions are in :mod:`.frequency`. Importing this never imports diffsynth."""
from Wan_SR.fusion.frequency import (butterworth_lowpass_mask, fuse_frames, fuse_luma, fuse_video,
                                     luma, luma_split, lowpass, rgb_to_yuv, yuv_to_rgb)

__all__ = ["butterworth_lowpass_mask", "fuse_frames", "fuse_luma", "fuse_video", "luma",
           "luma_split", "lowpass", "rgb_to_yuv", "yuv_to_rgb"]
