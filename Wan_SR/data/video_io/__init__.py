"""Video input/output used by every PS-SR script.

Frames are uint8 RGB arrays of shape (N, H, W, 3). Videos are decoded and encoded by the
ffmpeg binary that ships with ``imageio-ffmpeg`` (no system ffmpeg needed), through pipes, so
a video is never held whole in memory. Folders of png/jpg frames are accepted wherever a video
is. One module per concept, every public name importable from here
(``from Wan_SR.data import video_io; video_io.probe(...)``):

- :mod:`.ffmpeg`: the binary (:func:`ffmpeg_exe`), its version and the options it understands
  (:func:`ffmpeg_caps`; old builds get the older spelling), :class:`VideoError`;
- :mod:`.probing`: :func:`probe` -> :class:`VideoInfo` (decodable frame count, exact rate, size
  as a player shows it, SAR, rotation, audio);
- :mod:`.reader`: :func:`iter_frames`, :class:`FrameReader` (overlapping windows from a small
  buffer), :func:`read_frame`, :func:`read_video`;
- :mod:`.writer`: :class:`VideoWriter` (exact fps and size, audio copy, written under a
  temporary name and renamed on success), :func:`write_video`, :func:`is_complete_output`;
- :mod:`.inputs`: what counts as an input (:func:`list_inputs`, :func:`scan_inputs`,
  :func:`is_frame_folder`) and how inputs pair across folders (:func:`stem`);
- :mod:`.tensors`: :func:`frames_to_tensor`, :func:`tensor_to_frames`, :class:`HostFrames`
  (frames on their way down from the GPU).
"""
from fractions import Fraction  # the type of fps_to_rational's result and of a writer's sar

from .ffmpeg import FFmpegCaps, VideoError, clear_ffmpeg_cache, ffmpeg_caps, ffmpeg_exe, \
    ffmpeg_version
from .inputs import IMAGE_EXTS, VIDEO_EXTS, is_frame_folder, list_frame_files, list_inputs, \
    scan_inputs, stem
from .probing import DEFAULT_FOLDER_FPS, VideoInfo, fps_to_rational, probe
from .reader import FrameReader, iter_frames, read_frame, read_video
from .tensors import HostFrames, frames_to_tensor, tensor_to_frames
from .writer import VideoWriter, is_complete_output, quality_to_crf, write_video

__all__ = ["DEFAULT_FOLDER_FPS", "FFmpegCaps", "FrameReader", "HostFrames", "IMAGE_EXTS",
           "VIDEO_EXTS", "VideoError", "VideoInfo", "VideoWriter", "clear_ffmpeg_cache",
           "ffmpeg_caps", "ffmpeg_exe", "ffmpeg_version", "fps_to_rational", "frames_to_tensor",
           "is_complete_output", "is_frame_folder", "iter_frames", "list_frame_files",
           "list_inputs", "probe", "quality_to_crf", "read_frame", "read_video", "scan_inputs",
           "stem", "tensor_to_frames", "write_video"]
