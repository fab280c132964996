"""Synthetic talking-mouth clips: espeak-ng speech, viseme-driven mouth-ROI frames, degradations.

    from worker.synth import SynthOptions, SynthClip, generate_clip, write_clip
"""

from worker.synth.clip import SynthClip, SynthOptions, generate_clip
from worker.synth.io import write_clip

__all__ = ["SynthClip", "SynthOptions", "generate_clip", "write_clip"]
