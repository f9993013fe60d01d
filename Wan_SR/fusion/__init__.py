"""Frequency-domain update of step 2 (docs/method.md §7). Importing this never imports diffsynth."""
from Wan_SR.fusion.frequency import (butterworth_lowpass_mask, fuse_frames, fuse_luma, fuse_video,
                                     luma, luma_split, lowpass, rgb_to_yuv, yuv_to_rgb)

__all__ = ["butterworth_lowpass_mask", "fuse_frames", "fuse_luma", "fuse_video", "luma",
           "luma_split", "lowpass", "rgb_to_yuv", "yuv_to_rgb"]
