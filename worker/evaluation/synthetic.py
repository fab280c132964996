"""``sync-scorer eval-synth``: the scorer on freshly generated synthetic clips (issue 2).

Protocol (every number goes through ``worker.clipscore.score_clip``, the worker's job grid):
- ``n_clips`` clips of ``seconds`` s, seeds ``seed0 + i`` (default 500_000: tests use seeds
  < 1000, training >= 1_000_000, so these are unseen), frame rate alternating 25 / 30 fps, true
  audio offset drawn uniformly in ms from [-200, +200] (so mostly not a multiple of a frame).
- clean, low light, motion blur, partial occlusion: the same seeds and offsets with one
  degradation switched on (a paired comparison). 1-s windows (hop 1 s), 16-frame blocks; 8-frame
  blocks on the clean clips. Judged against the true offset, within +/-1 frame (metrics.py);
  SILENCE jobs are excluded, any other job without an offset counts as wrong (signals.py).
- in sync (|true| <= 1 frame) vs out of sync (|true| >= 120 ms): AUC of ``metrics.p_in_sync``
  over the clean 1-s windows (and over whole-clip summaries).
- mismatched control: clip i's frames with clip i+1's audio. AUC of 1-s window scores matched
  (clean) vs mismatched; ECE of the score as P(the audio belongs to these lips) on that 50/50
  mix; ECE of the confidence as P(offset within +/-1 frame) on all judged windows.
- silence: clips with silence gaps plus an inserted quiet stretch (1.0-3.5 s) holding digital
  zeros (even clips) or -66 dBFS white noise (odd clips). A job is *truly silent* when every one
  of its frames has audio RMS below the scorer's silence threshold; each truly silent window or
  block must be labelled SILENCE with a null score (violations counted).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from worker.evaluation.metrics import auc, describe, ece, p_in_sync, tally, within_frames
from worker.evaluation.signals import DEFAULT_CONFIDENT, JobTally

SEED0 = 500_000
CONDITIONS: dict[str, dict] = {
    "clean": {},
    "low_light": {"low_light": True},
    "motion_blur": {"motion_blur": True},
    "occlusion": {"occlusion": True},
}
TARGETS = {
    "clean.windows_1s": 0.98, "clean.blocks_16": 0.90, "low_light.windows_1s": 0.90,
    "motion_blur.windows_1s": 0.90, "occlusion.windows_1s": 0.90, "sync_auc": 0.98,
    "silence_violations": 0,
}
IN_SYNC_MAX_FRAMES = 1.0
OUT_OF_SYNC_MIN_MS = 120.0
QUIET_STRETCH_S = (1.0, 3.5)
QUIET_NOISE_RMS = 10 ** (-66 / 20)


@dataclass(frozen=True)
class SynthEvalConfig:
    n_clips: int = 40
    seconds: float = 8.0
    seed0: int = SEED0
    max_offset_ms: float = 200.0
    fps_choices: tuple[float, ...] = (25.0, 30.0)
    confident: float = DEFAULT_CONFIDENT
    silence_clips: int = 0  # 0: n_clips // 2 (at least 2)
    conditions: tuple[str, ...] = tuple(CONDITIONS)


@dataclass(frozen=True)
class ClipPlan:
    seed: int
    fps: float
    true_offset_ms: float


def plan_clips(cfg: SynthEvalConfig) -> list[ClipPlan]:
    """Deterministic seeds, frame rates and true offsets (uniform in ms) for the run."""
    if cfg.n_clips < 2:
        raise ValueError("need at least 2 clips (the mismatched control pairs clip i with clip i+1)")
    if cfg.seconds < 2.0:
        raise ValueError("clips must be at least 2 s long (1-s windows)")
    rng = np.random.default_rng(cfg.seed0)
    offsets = rng.uniform(-cfg.max_offset_ms, cfg.max_offset_ms, cfg.n_clips)
    return [ClipPlan(cfg.seed0 + i, float(cfg.fps_choices[i % len(cfg.fps_choices)]), round(float(d), 1))
            for i, d in enumerate(offsets)]


def insert_quiet_stretch(audio: np.ndarray, sample_rate: int, start_s: float, end_s: float,
                         noise_rms: float, seed: int) -> np.ndarray:
    """A copy of ``audio`` with [start_s, end_s) replaced by white noise of ``noise_rms`` (0: zeros)."""
    out = np.array(audio, dtype=np.float32, copy=True)
    a, b = int(start_s * sample_rate), min(len(out), int(end_s * sample_rate))
    if b > a:
        noise = np.random.default_rng(seed).standard_normal(b - a) * noise_rms if noise_rms > 0 else 0.0
        out[a:b] = noise
    return out


def truly_silent(job, audio: np.ndarray, sample_rate: int, fps: float, silence_rms: float) -> bool:
    """Every frame of the job has audio RMS below ``silence_rms`` (the audio starts at frame 0)."""
    from model_store.features import frame_rms

    rms = frame_rms(audio, sample_rate, 0.0, job.frame_start, job.frame_end - job.frame_start, fps)
    return bool(np.all(np.nan_to_num(rms, nan=0.0) < silence_rms))


def run_synthetic(scorer, cfg: SynthEvalConfig, log: Callable[[str], None] = lambda s: None) -> dict:
    from worker.clipscore import score_clip
    from worker.synth import SynthOptions, generate_clip

    plans = plan_clips(cfg)
    unknown = [c for c in cfg.conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; choose from {list(CONDITIONS)}")
    silence_rms = float(getattr(getattr(scorer, "config", None), "silence_rms", 0.005))
    t_run = time.perf_counter()
    windows = {c: JobTally(cfg.confident) for c in cfg.conditions}
    blocks16 = {c: JobTally(cfg.confident) for c in cfg.conditions}
    blocks8 = JobTally(cfg.confident)
    clip_hits: dict[str, list[bool]] = {c: [] for c in cfg.conditions}
    sync_windows: list[tuple[float, float, float]] = []  # (true offset, p_in_sync, frame_ms), clean windows
    sync_clips: list[tuple[float, float, float]] = []
    sync_abs: list[tuple[float, float, float]] = []  # (true offset, -|offset_ms|, frame_ms)
    matched_scores: list[float] = []
    mismatched_scores: list[float] = []
    mismatched_summaries: list[dict] = []
    per_clip: list[dict] = []
    scoring_s = video_s = 0.0
    clean_audio: dict[int, np.ndarray] = {}
    clean_frames: dict[int, tuple[np.ndarray, float]] = {}

    for i, plan in enumerate(plans):
        row: dict = {"seed": plan.seed, "fps": plan.fps, "true_offset_ms": plan.true_offset_ms}
        frame_ms = 1000.0 / plan.fps
        for cond in cfg.conditions:
            opts = SynthOptions(fps=plan.fps, **CONDITIONS[cond])
            clip = generate_clip(plan.seed, cfg.seconds, plan.true_offset_ms, opts)
            s = score_clip(scorer, clip.frames, clip.fps, clip.audio, block_frames=16)
            scoring_s += s.timings_s.get("scoring", 0.0)
            video_s += clip.frames.shape[0] / clip.fps
            windows[cond].add_all(s.windows, plan.true_offset_ms, frame_ms)
            blocks16[cond].add_all(s.blocks, plan.true_offset_ms, frame_ms)
            hit = within_frames(s.offset_ms, plan.true_offset_ms, frame_ms)
            clip_hits[cond].append(hit)
            w_hits = sum(within_frames(w.offset_ms, plan.true_offset_ms, frame_ms) for w in s.windows)
            row[cond] = {"offset_ms": s.offset_ms, "score": _r(s.score), "confidence": _r(s.confidence),
                         "label": s.label, "clip_within_1_frame": hit,
                         "windows_within": f"{w_hits}/{len(s.windows)}"}
            if cond == "clean":
                clean_audio[i], clean_frames[i] = clip.audio, (clip.frames, clip.fps)
                s8 = score_clip(scorer, clip.frames, clip.fps, clip.audio, block_frames=8)
                blocks8.add_all(s8.blocks, plan.true_offset_ms, frame_ms)
                for w in s.windows:
                    if w.label.value != "SILENCE":
                        sync_windows.append((plan.true_offset_ms, p_in_sync(w.offset_ms, w.confidence, frame_ms), frame_ms))
                        sync_abs.append((plan.true_offset_ms, _neg_abs(w.offset_ms), frame_ms))
                    if w.score is not None:
                        matched_scores.append(w.score)
                sync_clips.append((plan.true_offset_ms, p_in_sync(s.offset_ms, s.confidence, frame_ms), frame_ms))
        per_clip.append(row)
        log(f"[{i + 1}/{len(plans)}] seed {plan.seed} {plan.fps:g} fps true {plan.true_offset_ms:+.1f} ms: "
            + ", ".join(f"{c} {row[c]['offset_ms']} ({row[c]['windows_within']})" for c in cfg.conditions))

    # --- mismatched control: clip i's frames with clip i+1's audio ---------------------------
    if "clean" in cfg.conditions:
        for i in range(len(plans)):
            frames, fps = clean_frames[i]
            other = clean_audio[(i + 1) % len(plans)]
            s = score_clip(scorer, frames, fps, other, block_frames=16)
            mismatched_scores += [w.score for w in s.windows if w.score is not None]
            mismatched_summaries.append({"seed": plans[i].seed, "audio_of_seed": plans[(i + 1) % len(plans)].seed,
                                         "offset_ms": s.offset_ms, "score": _r(s.score),
                                         "confidence": _r(s.confidence), "direction": s.direction})
        log(f"mismatched control: {len(mismatched_summaries)} pairs")

    silence = _silence_check(scorer, plans, cfg, silence_rms, log)

    # --- report ---------------------------------------------------------------------------------
    def split(items: list[tuple[float, float, float]]) -> tuple[list[float], list[float]]:
        ins = [p for d, p, fm in items if abs(d) <= IN_SYNC_MAX_FRAMES * fm]
        outs = [p for d, p, fm in items if abs(d) >= OUT_OF_SYNC_MIN_MS]
        return ins, outs

    w_in, w_out = split(sync_windows)
    c_in, c_out = split(sync_clips)
    a_in, a_out = split(sync_abs)
    conf_samples = [smp for c in cfg.conditions for smp in windows[c].samples]
    report = {
        "command": "sync-scorer eval-synth",
        "config": asdict(cfg),
        "scorer": scorer.name,
        "protocol": __doc__,
        "conditions": {
            c: {"windows_1s": windows[c].as_dict(), "blocks_16": blocks16[c].as_dict(),
                "clips": tally(clip_hits[c])}
            for c in cfg.conditions
        },
        "sync_auc": {
            "statistic": "P(in sync) = (1+confidence)/2 if |offset_ms| <= 1 frame else (1-confidence)/2; "
                         "0.5 without an offset (metrics.p_in_sync)",
            "in_sync": f"|true offset| <= {IN_SYNC_MAX_FRAMES:g} frame",
            "out_of_sync": f"|true offset| >= {OUT_OF_SYNC_MIN_MS:g} ms",
            "windows_1s": {"auc": _r(auc(w_in, w_out)), "n_in_sync": len(w_in), "n_out_of_sync": len(w_out)},
            "clips": {"auc": _r(auc(c_in, c_out)), "n_in_sync": len(c_in), "n_out_of_sync": len(c_out)},
            "windows_1s_by_abs_offset_alone": {
                "auc": _r(auc(a_in, a_out)),
                "statistic": "-|offset_ms| (confidence ignored; ties count 1/2; no offset ranks last)"},
        },
        "mismatched": {
            "auc_window_score_matched_vs_mismatched": _r(auc(matched_scores, mismatched_scores)),
            "matched_window_score": describe(matched_scores),
            "mismatched_window_score": describe(mismatched_scores),
            "mismatched_clip_confidence": describe([m["confidence"] for m in mismatched_summaries]),
            "mismatched_clips_confident": sum((m["confidence"] or 0) >= cfg.confident for m in mismatched_summaries),
            "summaries": mismatched_summaries,
        },
        "calibration": {
            "score_ece": ece(matched_scores + mismatched_scores,
                             [True] * len(matched_scores) + [False] * len(mismatched_scores)),
            "score_ece_note": "score as P(audio belongs to these lips): clean matched windows (1) vs "
                              "mismatched windows (0), about 50/50",
            "confidence_ece": ece([s.confidence for s in conf_samples], [s.hit for s in conf_samples]),
            "confidence_ece_note": "confidence as P(window offset within +/-1 frame), all judged windows of "
                                   "all conditions",
        },
        "silence": silence,
        "speed": {"scoring_s": round(scoring_s, 2), "video_s": round(video_s, 1),
                  "scoring_s_per_video_s": _r(scoring_s / video_s if video_s else None),
                  "run_s": round(time.perf_counter() - t_run, 1)},
        "per_clip": per_clip,
    }
    if "clean" in cfg.conditions:
        report["conditions"]["clean"]["blocks_8"] = blocks8.as_dict()
    report["targets"] = _targets(report)
    return report


def _silence_check(scorer, plans: list[ClipPlan], cfg: SynthEvalConfig, silence_rms: float,
                   log: Callable[[str], None]) -> dict:
    from worker.clipscore import score_clip
    from worker.synth import SynthOptions, generate_clip

    n = cfg.silence_clips or max(2, cfg.n_clips // 2)
    silent_jobs = violations = false_silence = jobs = 0
    examples: list[dict] = []
    accuracy = JobTally(cfg.confident)
    for k, plan in enumerate(plans[:n]):
        clip = generate_clip(plan.seed, cfg.seconds, plan.true_offset_ms,
                             SynthOptions(fps=plan.fps, silence_gaps=True))
        noise = 0.0 if k % 2 == 0 else QUIET_NOISE_RMS
        audio = insert_quiet_stretch(clip.audio, clip.sample_rate, *QUIET_STRETCH_S, noise, plan.seed)
        s = score_clip(scorer, clip.frames, clip.fps, audio, block_frames=16)
        accuracy.add_all(s.windows, plan.true_offset_ms, 1000.0 / plan.fps)
        for job in s.windows + s.blocks:
            jobs += 1
            silent = truly_silent(job, audio, clip.sample_rate, clip.fps, silence_rms)
            if silent:
                silent_jobs += 1
                if job.label.value != "SILENCE" or job.score is not None:
                    violations += 1
                    if len(examples) < 10:
                        examples.append({"seed": plan.seed, "kind": job.kind.value, "frames": [job.frame_start, job.frame_end],
                                         "label": job.label.value, "score": job.score})
            elif job.label.value == "SILENCE":
                from model_store.features import frame_rms

                rms = frame_rms(audio, clip.sample_rate, 0.0, job.frame_start, job.frame_end - job.frame_start, clip.fps)
                if np.mean(np.nan_to_num(rms) >= silence_rms) >= 0.5:
                    false_silence += 1
    log(f"silence: {silent_jobs} truly silent jobs, {violations} violations")
    return {
        "clips": n, "jobs": jobs, "truly_silent_jobs": silent_jobs, "violations": violations,
        "violation_examples": examples,
        "silence_label_on_mostly_voiced_jobs": false_silence,
        "silence_rms_threshold": silence_rms,
        "rule": "truly silent = every frame's audio RMS below the scorer's silence threshold; must be "
                "label SILENCE with score null",
        "windows_1s_accuracy_with_gaps": accuracy.as_dict(),
    }


def _targets(report: dict) -> dict:
    cond = report["conditions"]
    values = {
        "clean.windows_1s": cond.get("clean", {}).get("windows_1s", {}).get("rate"),
        "clean.blocks_16": cond.get("clean", {}).get("blocks_16", {}).get("rate"),
        "low_light.windows_1s": cond.get("low_light", {}).get("windows_1s", {}).get("rate"),
        "motion_blur.windows_1s": cond.get("motion_blur", {}).get("windows_1s", {}).get("rate"),
        "occlusion.windows_1s": cond.get("occlusion", {}).get("windows_1s", {}).get("rate"),
        "sync_auc": report["sync_auc"]["windows_1s"]["auc"],
        "silence_violations": report["silence"]["violations"],
    }
    out = {}
    for key, target in TARGETS.items():
        v = values.get(key)
        ok = None if v is None else (v <= target if key == "silence_violations" else v >= target)
        out[key] = {"value": v, "target": (f"<= {target}" if key == "silence_violations" else f">= {target}"),
                    "pass": ok}
    return out


def _neg_abs(offset_ms: float | None) -> float:
    return -1e9 if offset_ms is None else -abs(float(offset_ms))  # no offset ranks last


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)
