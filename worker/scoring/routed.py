"""One Scorer over two bundles: the full-band model and its narrowband companion.

Telephone-band audio (8 kHz on its way here) costs the full-band model 11 points of 1-s windows
on the dev clips (docs/training.md, session 20). A bundle directory may hold a ``narrowband/``
bundle: the same network with its audio encoder trained further on telephone-band audio, the
video side left exactly as it was (``make_model --finetune-freeze video --finetune-freeze-stats``).
Each job goes to the model its own audio wants (``band.is_narrowband``; no verdict: the full-band
model), so a session that switches from a microphone to a phone line switches with it, and a job
gets the same answer whichever worker scores it.

Because the video side is shared, both models read the frames the same way: one stream (the
per-session cache of frame features) serves both, and a job's video context is the same whichever
model scored the jobs before it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from worker.scoring.band import is_narrowband
from worker.scoring.types import LipSyncScore, ScoreRequest
from worker.scoring.validate import validate_request

log = logging.getLogger(__name__)

NARROWBAND_DIR = "narrowband"  # the companion's directory inside a bundle's
# the parts whose weights must match for one cache of frame features to serve both models
SHARED_PREFIXES = ("frame_encoder.", "video_head.", "shape_encoder.")


class CompanionMismatch(ValueError):
    """The narrowband bundle cannot stand beside the full-band one: another video side (weights,
    batch-norm statistics or frame format) or another audio rate."""


def narrowband_dir(bundle_dir: Path) -> Path | None:
    """The companion bundle directory of ``bundle_dir``, if it has one."""
    d = Path(bundle_dir) / NARROWBAND_DIR
    return d if (d / "manifest.json").is_file() else None


def check_shared_video(wide_state: dict, narrow_state: dict) -> None:
    """Raises CompanionMismatch unless every video-side tensor of the two state dicts is equal."""
    import torch

    keys = sorted(k for k in wide_state if k.startswith(SHARED_PREFIXES))
    other = sorted(k for k in narrow_state if k.startswith(SHARED_PREFIXES))
    if keys != other:
        raise CompanionMismatch("the narrowband bundle's video side has other tensors than the full-band one's")
    for k in keys:
        if not torch.equal(wide_state[k], narrow_state[k]):
            raise CompanionMismatch(f"the narrowband bundle's video side differs from the full-band one's ({k})")


class BandRoutedScorer:
    """The Scorer protocol over ``wide`` (full band) and ``narrow`` (telephone band). Everything
    but the scoring itself (name, config, manifest, device, context) is the full-band model's:
    a signal names the model that scored it in its ``scorer`` field."""

    def __init__(self, wide, narrow) -> None:
        if wide.manifest.audio.sample_rate != narrow.manifest.audio.sample_rate:
            # score_batch validates each job once, at the full-band model's rate, for both
            raise CompanionMismatch(f"the narrowband bundle reads audio at {narrow.manifest.audio.sample_rate} Hz, "
                                    f"the full-band one at {wide.manifest.audio.sample_rate} Hz")
        self.wide = wide
        self.narrow = narrow

    def __getattr__(self, attr: str):
        # config, manifest, device, context_frames...: the full-band model's. Only asked for what
        # __init__ did not set; before it (copy, unpickling) or for a dunder there is nothing to ask
        if attr in ("wide", "narrow") or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.wide, attr)

    def manifest_of(self, scorer_name: str):
        """The manifest (calibration) of the model that signs its results ``scorer_name``."""
        return self.narrow.manifest if scorer_name == self.narrow.name else self.wide.manifest

    @property
    def name(self) -> str:
        return self.wide.name

    @property
    def search_margin_ms(self) -> float:
        return max(self.wide.search_margin_ms, self.narrow.search_margin_ms)

    def new_stream(self):
        return self.wide.new_stream()

    def route(self, request: ScoreRequest) -> bool:
        """True: the narrowband model scores this job. Judged on the job's own second; where that
        holds too little speech, on all the audio the job came with (its search margin too: a
        window with a few words in its own second and more beside it went full-band, 4% of the dev
        clips' phone windows)."""
        au = request.audio
        samples, present = job_audio(request)
        verdict = is_narrowband(samples, au.sample_rate, present)
        if verdict is None and samples.shape[0] < au.samples.shape[0]:
            verdict = is_narrowband(au.samples, au.sample_rate, au.present)
        return bool(verdict)

    def score(self, request: ScoreRequest, stream=None) -> LipSyncScore:
        return self.score_batch([request], [stream])[0]

    def score_batch(self, requests: Sequence[ScoreRequest], streams: Sequence | None = None) -> list[LipSyncScore]:
        if streams is None:
            streams = [None] * len(requests)
        if len(streams) != len(requests):
            raise ValueError("streams and requests differ in length")
        rate = self.wide.manifest.audio.sample_rate
        for r in requests:  # a bad job fails as it would with one model, before any is scored
            validate_request(r, rate)
        narrow = [self.route(r) for r in requests]
        out: list[LipSyncScore | None] = [None] * len(requests)
        for group in _groups(narrow, streams):
            model = self.narrow if narrow[group[0]] else self.wide
            # validated above, at the rate both models share (__init__ checks it)
            results = model.score_batch([requests[i] for i in group], [streams[i] for i in group], validated=True)
            for i, result in zip(group, results):
                out[i] = result
        return out  # type: ignore[return-value]  # every job is in one group


def narrowband_of(scorer):
    """The narrowband companion ``scorer`` routes telephone-band jobs to, or None (a single model,
    the heuristic)."""
    return scorer.narrow if isinstance(scorer, BandRoutedScorer) else None


BAND_SPAN_S = 1.0  # the least audio judged around a job (its own time, or this much centred on it)


def job_audio(request: ScoreRequest) -> tuple:
    """The samples (and their present mask) under the job's own frames, widened to BAND_SPAN_S
    around their middle: the band of the job's own time, not of its search margin (which made the
    check read up to twice as much: 0.3 ms per job)."""
    au, fs = request.audio, request.frames
    rate = au.sample_rate
    mid = (fs.frame_start + fs.frame_end) / 2.0 / fs.fps * rate - au.start_sample
    half = max((fs.frame_end - fs.frame_start) / fs.fps, BAND_SPAN_S) * rate / 2.0
    a, b = max(0, int(mid - half)), min(au.samples.shape[0], int(mid + half))
    present = None if au.present is None else au.present[a:b]
    return au.samples[a:b], present


def _groups(narrow: list[bool], streams: Sequence) -> list[list[int]]:
    """Job indices per model call, in call order. Each job is numbered by its run in its own
    stream (how many times that session's jobs changed model before it, in the caller's order),
    and there is one call per (run, model): a session's jobs keep their order, so a job whose
    context frames an earlier job of its session caches is scored after it, as with one model,
    while sessions that stay on one band share one call per model (a phone session's silent
    block, read full-band, splits only its own session)."""
    last: dict[int, tuple[bool, int]] = {}
    calls: dict[tuple[int, bool], list[int]] = {}
    for i, (stream, nb) in enumerate(zip(streams, narrow)):
        run = 0
        if stream is not None:
            prev = last.get(id(stream))
            run = 0 if prev is None else prev[1] + (prev[0] != nb)
            last[id(stream)] = (nb, run)
        calls.setdefault((run, nb), []).append(i)
    return [calls[key] for key in sorted(calls)]


def with_narrowband(wide, wide_state: dict, bundle_dir: Path, config, device: str):
    """``wide`` (a ModelScorer of ``bundle_dir``, built from ``wide_state``) routed with its
    narrowband companion, or ``wide`` alone where there is none. A companion that cannot be used
    is logged and left out: the full-band model still scores everything."""
    from model_store.bundle import BundleError, load_bundle
    from worker.scoring.scorer import ModelScorer

    nb_dir = narrowband_dir(bundle_dir)
    if nb_dir is None:
        return wide
    try:
        manifest, state = load_bundle(nb_dir)
        if manifest.video != wide.manifest.video:
            # the shared cache holds frame features of one input format
            raise CompanionMismatch(f"the narrowband bundle reads other frames ({manifest.video}) than the "
                                    f"full-band one ({wide.manifest.video})")
        check_shared_video(wide_state, state)
        # (another audio rate: BandRoutedScorer refuses the pair)
        return BandRoutedScorer(wide, ModelScorer(manifest, state, config, device=device))
    except (BundleError, ValueError, RuntimeError, OSError) as exc:
        log.error("narrowband bundle %s not used (the full-band model scores every job): %s", nb_dir, exc)
        return wide
