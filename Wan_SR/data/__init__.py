"""Frames in and out: videos and frame folders (:mod:`.video_io`: probe, stream-read, write
through ffmpeg; the input rules of every script), training clips (:mod:`.clip_reader` for random
access with PyAV, :mod:`.dataset` for :class:`~.dataset.VideoDataset` and its loader) and the
synthetic degradation that makes low-quality inputs from them (:mod:`.degradation`). Knows
nothing of the models (docs/method.md §9, "Training data", "Degradation")."""
