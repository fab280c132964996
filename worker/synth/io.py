"""Write a ``SynthClip`` to an mp4 (H.264 yuv420p + AAC) through an ffmpeg subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import wave

import numpy as np

from worker.synth.clip import SynthClip


def write_clip(clip: SynthClip, path: str) -> None:
    """Encode ``clip`` to ``path`` (mp4: H.264 crf 18 yuv420p video, AAC 192 kb/s mono audio).

    Raises RuntimeError with ffmpeg's last error line when encoding fails.
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg not found on PATH")
    frames = np.ascontiguousarray(clip.frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    _, h, w, _ = frames.shape
    pcm = (np.clip(clip.audio, -1, 1) * 32767).round().astype("<i2")
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        wav_path = os.path.join(tmp, "audio.wav")
        with wave.open(wav_path, "wb") as wf:
            wf.setnchannels(1)
            wf.setsampwidth(2)
            wf.setframerate(int(clip.sample_rate))
            wf.writeframes(pcm.tobytes())
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", repr(float(clip.fps)),
               "-i", "pipe:0", "-i", wav_path,
               "-map", "0:v", "-map", "1:a",
               "-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p",
               "-threads", "1", "-c:a", "aac", "-b:a", "192k", "-movflags", "+faststart", path]
        proc = subprocess.run(cmd, input=frames.tobytes(), capture_output=True, check=False)
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"ffmpeg failed: {lines[-1] if lines else proc.returncode}")
