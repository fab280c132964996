"""Training data: clips (mouth ROIs + 16 kHz audio) and a window sampler for contrastive sync training.

A clip is in sync by construction (synthetic, offset 0) or by assumption (real footage's own
audio). A training window pairs frames [s, s+T) with audio grid positions shifted by a label
offset d, so the model must find d among all candidate offsets and among other clips' audio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model_store.bundle import AudioSpec
from model_store.features import grid_times_ms, log_mel, normalize_mel, sample_mel_on_grid


@dataclass
class Clip:
    name: str
    group: str  # speaker / source group, for splitting
    rois: np.ndarray  # (T, 96, 96) uint8 gray
    fps: float
    mel: torch.Tensor  # (n_mels, M) log-mel at hop_length
    present: np.ndarray  # (T,) bool
    source: str  # "real" | "synth"
    audio: np.ndarray | None = None  # float32 16 kHz mono (kept for calibration/evaluation)
    shape: np.ndarray | None = None  # (T, N_SHAPE_FEATURES) mouth-shape measures from lip landmarks
    landmarks: np.ndarray | None = None  # (T, 40, 2) lip landmarks in the ROI, normalised (tracker's)

    @property
    def n_frames(self) -> int:
        return int(self.rois.shape[0])


def _gray(frames: np.ndarray) -> np.ndarray:
    if frames.ndim == 4:
        f = frames.astype(np.float32)
        return np.clip(0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2], 0, 255).astype(np.uint8)
    return frames


def make_clip(name: str, group: str, rois: np.ndarray, audio: np.ndarray, fps: float, spec: AudioSpec,
              present: np.ndarray | None = None, source: str = "real", landmarks: np.ndarray | None = None) -> Clip:
    mel = log_mel(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), spec)
    rois = _gray(rois)
    if present is None:
        present = np.ones(rois.shape[0], dtype=bool)
    shape = None
    if landmarks is not None:
        from worker.tracking.geometry import mouth_shape

        shape = mouth_shape(landmarks)
    return Clip(name, group, rois, float(fps), mel, np.asarray(present, dtype=bool), source,
                np.ascontiguousarray(audio, dtype=np.float32), shape,
                None if landmarks is None else np.asarray(landmarks, dtype=np.float32))


def load_roi_dir(path: Path, spec: AudioSpec, group_of=None, min_face: float = 0.8) -> list[Clip]:
    """Load tracked real clips (``.npz`` from worker.tracking.prepare). Skips clips with few faces."""
    clips = []
    for f in sorted(Path(path).glob("*.npz")):
        if f.name.endswith(".tmp.npz"):  # a tracker's unfinished write (worker.tracking.prepare)
            continue
        try:
            z = np.load(f, allow_pickle=False)
            rois = z["rois"]
            face = z["face_present"].astype(bool) if "face_present" in z else np.ones(len(rois), bool)
            if rois.shape[0] < 12 or face.mean() < min_face:
                continue
            fps = float(z["fps"])
            group = group_of(f.stem) if group_of else f.stem
            marks = z.get("landmarks")  # older caches have none
            clips.append(make_clip(f.stem, group, rois, z["audio"], fps, spec, face, "real", marks))
        except Exception as exc:  # noqa: BLE001 - a broken cache file must not stop training
            print(f"skip {f}: {exc}")
    return clips


@dataclass
class Batch:
    frames: torch.Tensor  # (B, ctx + T, 96, 96) uint8->float [0,1] grayscale, before augmentation
    frame_ok: torch.Tensor  # (B, T) bool
    mel: torch.Tensor  # (B, n_mels, steps * (n_audio + 2 actx))
    audio_ok: torch.Tensor  # (B, n_audio) bool
    label: torch.Tensor  # (B,) offset index into the grid's offsets
    clip_ids: list[int]
    shape: torch.Tensor | None = None  # (B, ctx + T, N_SHAPE_FEATURES) mouth shape per frame
    shape_ok: torch.Tensor | None = None  # (B, ctx + T) bool: a tracked face with landmarks
    # (B,) float: the true offset index minus ``label`` (the sub-frame jitter, in (-0.5, 0.5))
    label_frac: torch.Tensor | None = None
    # (B, n_mels, ...) the audio before band limiting (WindowSampler.band_limit_prob), for a teacher:
    # it shows the student what the full band would have said. None: the same as ``mel``
    teacher_mel: torch.Tensor | None = None


class WindowSampler:
    """Draws batches of training windows. Two windows per clip per batch (same speaker, other
    words) so other-clip negatives include hard same-speaker ones."""

    def __init__(self, clips: list[Clip], spec: AudioSpec, video_ctx: int, max_shift_frames: int,
                 seed: int, weights: np.ndarray | None = None, delay_frames: int = 0,
                 audio_noise_prob: float = 0.0, edge_jitter_frames: int = 0, voice_warp: float = 0.0,
                 band_limit_prob: float = 0.0) -> None:
        self.clips = clips
        self.spec = spec
        self.ctx = video_ctx
        self.k = max_shift_frames
        self.delay = delay_frames  # VideoSpec.delay_frames: embedding t describes frame t - delay
        self.audio_noise_prob = audio_noise_prob
        self.edge_jitter_frames = edge_jitter_frames
        self.voice_warp = voice_warp
        self.band_limit_prob = band_limit_prob
        self._band = MelBands(spec) if band_limit_prob > 0 else None
        # augmentations draw from their own stream: switching one on leaves the windows unchanged
        self.aug_rng = np.random.default_rng(seed + 7919)
        self.rng = np.random.default_rng(seed)
        w = np.array([max(c.n_frames, 1) for c in clips], dtype=np.float64) if weights is None else weights
        self.p = w / w.sum()

    def sample(self, batch_size: int, n_frames: int, shift_prob: float = 0.7) -> Batch:
        actx = self.spec.context_frames
        k = self.k
        n_audio = n_frames + 2 * k
        frames, fok, mels, aok, labels, ids, shapes, shape_ok = [], [], [], [], [], [], [], []
        fracs, teacher_mels = [], []
        picks = self.rng.choice(len(self.clips), size=(batch_size + 1) // 2, p=self.p)
        order = np.repeat(picks, 2)[:batch_size]
        for ci in order:
            clip = self.clips[ci]
            t_max = clip.n_frames - n_frames
            s = int(self.rng.integers(0, t_max + 1)) if t_max > 0 else 0
            idx = np.arange(s - self.ctx, s + n_frames)
            valid_idx = (idx >= 0) & (idx < clip.n_frames)
            src = np.clip(idx, 0, clip.n_frames - 1)
            frames.append(clip.rois[src])
            if clip.shape is not None:
                shapes.append(clip.shape[src])
                shape_ok.append(valid_idx & clip.present[src])
            else:
                shapes.append(None)
                shape_ok.append(np.zeros(len(idx), dtype=bool))
            ok = valid_idx[self.ctx:] & clip.present[np.clip(idx[self.ctx:], 0, clip.n_frames - 1)]
            fok.append(ok)
            d = int(self.rng.integers(-k, k + 1)) if self.rng.random() < shift_prob else 0
            jitter = float(self.rng.uniform(-0.3, 0.3))  # sub-frame: real offsets are not whole frames
            first = s + d - k - actx - self.delay
            times = grid_times_ms(first, n_audio + 2 * actx, clip.fps, self.spec.steps_per_frame) + jitter * 1000.0 / clip.fps
            hop_ms = 1000.0 * self.spec.hop_length / self.spec.sample_rate
            feat, vstep = sample_mel_on_grid(clip.mel, 0.0, times, hop_ms)
            if self.edge_jitter_frames > 0:
                vstep = self._jitter_edges(vstep)
            if self.audio_noise_prob > 0 and self.aug_rng.random() < self.audio_noise_prob:
                feat = self._add_noise(feat, vstep, times, hop_ms)
            if self.voice_warp > 0 and self.aug_rng.random() < 0.5:
                feat = self._warp_voice(feat)
            if self._band is not None:
                teacher_mels.append(normalize_mel(feat, vstep).float())
                if self.aug_rng.random() < self.band_limit_prob:
                    feat = self._band.limit(feat, self.aug_rng)
            feat = normalize_mel(feat, vstep)
            vgrid = vstep.view(-1, self.spec.steps_per_frame).all(dim=1)[actx: actx + n_audio]
            mels.append(feat.float())
            aok.append(vgrid)
            # audio index 0 is grid position s + d - k - delay; offset index j pairs embedding t
            # with audio index t + j, i.e. grid s + d - k - delay + t + j, which is the time of the
            # frame it describes (s + t - delay) when j = k - d. The jitter moves every audio
            # sample later by ``jitter`` frames, so the exact match is at j = k - d - jitter.
            labels.append(k - d)
            fracs.append(-jitter)
            ids.append(int(ci))
        return Batch(
            frames=torch.from_numpy(np.stack(frames)).float().div_(255.0),
            frame_ok=torch.from_numpy(np.stack(fok)),
            mel=torch.stack(mels),
            audio_ok=torch.stack(aok),
            label=torch.tensor(labels),
            clip_ids=ids,
            **self._shapes(shapes, shape_ok),
            label_frac=torch.tensor(fracs, dtype=torch.float32),
            teacher_mel=torch.stack(teacher_mels) if teacher_mels else None,
        )

    @staticmethod
    def _shapes(shapes: list, shape_ok: list) -> dict:
        known = next((s for s in shapes if s is not None), None)
        if known is None:
            return {}
        zeros = np.zeros_like(known)
        return {"shape": torch.from_numpy(np.stack([zeros if s is None else s for s in shapes])),
                "shape_ok": torch.from_numpy(np.stack(shape_ok))}

    def _jitter_edges(self, valid: torch.Tensor) -> torch.Tensor:
        """Move the audio's clip edges inwards by 0..edge_jitter_frames frames, independently of the
        video's. Short clips put an edge in most windows, and where the audio ends exactly where the
        frames end the edges alone give away the offset: a shortcut that long clips never offer."""
        steps = valid.nonzero().flatten()
        if steps.numel() == 0:
            return valid
        spf = self.spec.steps_per_frame
        cut_lo = int(self.aug_rng.integers(0, self.edge_jitter_frames + 1)) * spf
        cut_hi = int(self.aug_rng.integers(0, self.edge_jitter_frames + 1)) * spf
        out = valid.clone()
        lo, hi = int(steps[0]), int(steps[-1])
        if lo > 0:  # the clip starts inside this window
            out[lo: lo + cut_lo] = False
        if hi < valid.numel() - 1:  # the clip ends inside this window
            out[max(hi + 1 - cut_hi, 0): hi + 1] = False
        return out

    def _warp_voice(self, feat: torch.Tensor) -> torch.Tensor:
        """Another voice for the same mouth: stretch the mel axis by a factor in 1 +/- voice_warp
        (vocal tract length perturbation: formants of shorter or longer vocal tracts sit
        proportionally higher or lower) and blank a random band of up to 4 mel bins (the
        frequency masking of SpecAugment). Few training voices; every speaker's mouth moves with
        the timing of their speech, not with its spectral colour."""
        n_mels = feat.shape[0]
        alpha = 1.0 + float(self.aug_rng.uniform(-self.voice_warp, self.voice_warp))
        src = (torch.arange(n_mels, dtype=torch.float64) / alpha).clamp(0, n_mels - 1)
        lo = src.floor().long()
        hi = (lo + 1).clamp(max=n_mels - 1)
        frac = (src - lo).to(feat.dtype)[:, None]
        out = feat[lo] * (1 - frac) + feat[hi] * frac
        width = int(self.aug_rng.integers(0, 5))
        if width:
            b0 = int(self.aug_rng.integers(0, n_mels - width + 1))
            out[b0: b0 + width] = out.mean(dim=0, keepdim=True)
        return out

    def _add_noise(self, feat: torch.Tensor, valid: torch.Tensor, times_ms: torch.Tensor, hop_ms: float) -> torch.Tensor:
        """Mix noise into a log-mel window at 0-25 dB SNR: half the time another clip's audio
        (babble: speech that is not the mouth's), else noise with a random spectral tilt. Powers of
        independent sources add, so the mix is log(exp(feat) + g * noise_power)."""
        if not bool(valid.any()):
            return feat
        power = feat.exp()
        if self.aug_rng.random() < 0.5:
            other = self.clips[int(self.aug_rng.integers(len(self.clips)))]
            span_ms = float(times_ms[-1] - times_ms[0])
            dur_ms = other.mel.shape[-1] * hop_ms
            start = float(self.aug_rng.uniform(0.0, max(dur_ms - span_ms, 0.0)))
            noise, _ = sample_mel_on_grid(other.mel, 0.0, times_ms - times_ms[0] + start, hop_ms)
            noise = noise.exp()
        else:
            n_mels = feat.shape[0]
            tilt = torch.linspace(0.0, 1.0, n_mels, dtype=feat.dtype) * float(self.aug_rng.uniform(-3.0, 1.0))
            jitter = torch.from_numpy(self.aug_rng.standard_normal(tuple(feat.shape))).to(feat.dtype)
            noise = torch.exp(tilt[:, None] + 0.3 * jitter)
        snr_db = float(self.aug_rng.uniform(0.0, 25.0))
        p_sig = float(power[:, valid].mean())
        p_noise = float(noise[:, valid].mean()) + 1e-12
        g = p_sig / (p_noise * 10.0 ** (snr_db / 10.0))
        return torch.log(power + g * noise)


class MelBands:
    """Telephone-band audio on a log-mel window: what 8 kHz audio (or a phone line's 300-3400 Hz)
    looks like to the networks once resampled to the bundle's rate. The filter is a roll-off in dB
    per kHz beyond a cut-off, down to a stop band's depth; each mel band takes its filter's
    weighted mean of that gain, so a band straddling the cut-off keeps part of its power (resampling
    a dev clip through 8 kHz with torchaudio lowers its 3.4 kHz band by 0.5, its 4.2 kHz band by 3
    and its 6-7 kHz bands by 7-8 on the log scale: no sharp edge at 4 kHz)."""

    def __init__(self, spec: AudioSpec) -> None:
        import torchaudio.functional as AF

        n_freqs = spec.n_fft // 2 + 1
        self.fb = AF.melscale_fbanks(n_freqs, spec.f_min, spec.f_max, spec.n_mels, spec.sample_rate)  # (freq, mel)
        self.freqs_khz = torch.linspace(0, spec.sample_rate / 2000.0, n_freqs)
        self.weight = self.fb.sum(0).clamp_min(1e-12)
        self.log_floor = spec.log_floor

    def band_gain(self, high_khz: float, slope_db_per_khz: float, stop_db: float, low_khz: float = 0.0) -> torch.Tensor:
        """(n_mels,) power gain of each mel band through the filter."""
        f = self.freqs_khz
        loss_db = (slope_db_per_khz * (f - high_khz).clamp_min(0.0)).clamp(max=stop_db)
        if low_khz > 0:
            loss_db = torch.maximum(loss_db, (slope_db_per_khz * (low_khz - f).clamp_min(0.0)).clamp(max=stop_db))
        gain = 10.0 ** (-loss_db / 10.0)
        return (self.fb * gain[:, None]).sum(0) / self.weight

    def limit(self, feat: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """A log-mel window (n_mels, steps) through a random telephone band: the top cut-off at
        3-4 kHz, a roll-off of 15-100 dB per kHz down to 30-70 dB; half the time a bottom cut-off at
        0.1-0.3 kHz too."""
        high_khz = float(rng.uniform(3.0, 4.0))
        slope = float(rng.uniform(15.0, 100.0))
        stop_db = float(rng.uniform(30.0, 70.0))
        low_khz = float(rng.uniform(0.1, 0.3)) if rng.random() < 0.5 else 0.0
        gain = self.band_gain(high_khz, slope, stop_db, low_khz).to(feat.dtype)[:, None]
        power = (feat.exp() - self.log_floor).clamp_min(0.0)  # log_mel is log(power + floor)
        return torch.log(power * gain + self.log_floor)


def split_groups(clips: list[Clip], val_fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    groups = sorted({c.group for c in clips})
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    n_val = max(1, math.ceil(len(groups) * val_fraction)) if len(groups) > 1 and val_fraction > 0 else 0
    val = set(groups[:n_val])
    return [c for c in clips if c.group not in val], [c for c in clips if c.group in val]
