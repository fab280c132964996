"""Synthetic talking-mouth clips: espeak-ng speech, viseme-driven mouth-ROI frames, degradations.

    from worker.synth import SynthOptions, SynthClip, generate_clip, write_clip
"""

from __future__ import annotations

import importlib

# Resolved on first use (PEP 562): `worker.synth.cli` is imported by every `sync-scorer` command to
# build its parser, and the clip modules pull scipy.signal (0.6 s) that only `synth` needs.
_LAZY = {"SynthClip": "worker.synth.clip", "SynthOptions": "worker.synth.clip",
         "generate_clip": "worker.synth.clip", "write_clip": "worker.synth.io"}

__all__ = ["SynthClip", "SynthOptions", "generate_clip", "write_clip"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
