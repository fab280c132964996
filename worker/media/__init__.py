"""Media decoding (ffmpeg/ffprobe subprocesses)."""

from worker.media.decode import MediaError, MediaInfo, iter_video, probe, read_audio, read_video

__all__ = ["MediaError", "MediaInfo", "iter_video", "probe", "read_audio", "read_video"]
