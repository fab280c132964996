"""Model bundles: a manifest (JSON) plus safetensors weights, checked by sha256, never unpickled.

A bundle directory holds ``manifest.json`` and the weights file it names. The manifest states the
architecture and everything needed to turn raw audio and ROI frames into the model's input, so
other architectures (e.g. SyncNet v2: 224x224 colour, 5-frame windows, 13 MFCCs) fit the same
format with their own input spec.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "bundles" / "default"
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class BundleError(RuntimeError):
    """A bundle that cannot be used: missing files, bad manifest, checksum mismatch."""


@dataclass(frozen=True)
class AudioSpec:
    sample_rate: int = 16000
    features: str = "log_mel"
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    f_min: float = 50.0
    f_max: float = 7600.0
    log_floor: float = 1e-6
    # mel frames are resampled onto the video frame grid at this many steps per frame
    steps_per_frame: int = 4
    # audio grid positions of context on each side the encoder needs (receptive field)
    context_frames: int = 4
    normalize: str = "span_cmvn"  # per-band mean over the job's span removed, scalar std divided


@dataclass(frozen=True)
class VideoSpec:
    roi_height: int = 96
    roi_width: int = 96
    channels: int = 1  # 1 = grayscale (GRAY8 or RGB24 converted with ITU-R 601 luma)
    resize: str = "area"
    normalize: str = "per_frame_standardize"  # (x - mean(frame)) / (std(frame) + 1e-3)
    # past frames the temporal head looks at (the head is causal so a stream's cache is exact)
    context_frames: int = 6
    causal: bool = True
    # the embedding computed at frame t describes frame t - delay_frames: a causal head over frames
    # t-6..t is centred on t-3 when delay_frames = 3, so it sees the mouth on both sides of the
    # sound it is matched with (mouths move before and after the sound). 0 = bundles before 1.2.
    delay_frames: int = 0


@dataclass(frozen=True)
class Calibration:
    """Logistic maps fitted on held-out data.

    score = sigmoid(score_a * best_similarity + score_b)  -> P(audio belongs to these lips)
    confidence = sigmoid(conf_w . [margin, best_similarity, log(n_frames)] + conf_b)
              -> P(offset within +/-1 frame)
    """

    score_a: float = 10.0
    score_b: float = -3.0
    conf_w: tuple[float, float, float] = (40.0, 5.0, 0.5)
    conf_b: float = -4.0
    fitted_on: str = "uncalibrated defaults"
    ece_score: float | None = None
    ece_confidence: float | None = None


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    architecture: str
    arch_params: dict[str, Any]
    embedding_dim: int
    audio: AudioSpec
    video: VideoSpec
    calibration: Calibration
    weights_file: str
    weights_sha256: str
    format_version: int = FORMAT_VERSION
    training: dict[str, Any] = field(default_factory=dict)
    # share of each window's mean embedding removed before the cosines (offsets.center_embeddings)
    embedding_centering: float = 0.0
    # offsets.smooth_curve's radius: a job's curve is averaged over +/- this many frames before the
    # peak is picked (part of the bundle because the calibration is fitted on the smoothed peak)
    peak_smooth_frames: int = 0

    @property
    def scorer_name(self) -> str:
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "arch_params": self.arch_params,
            "embedding_dim": self.embedding_dim,
            "input": {"audio": vars(self.audio), "video": vars(self.video)},
            "similarity": {"embedding_centering": self.embedding_centering,
                           "peak_smooth_frames": self.peak_smooth_frames},
            "calibration": {**vars(self.calibration), "conf_w": list(self.calibration.conf_w)},
            "weights": {"file": self.weights_file, "sha256": self.weights_sha256},
            "training": self.training,
        }

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Manifest:
        if not isinstance(doc, dict):  # (a JSON list read "'list' object has no attribute 'get'")
            raise BundleError(f"malformed manifest: a JSON object is needed, not a {type(doc).__name__}")
        try:
            if int(doc.get("format_version", 0)) != FORMAT_VERSION:
                raise BundleError(f"unsupported bundle format_version {doc.get('format_version')!r}")
            cal = dict(doc.get("calibration", {}))
            if "conf_w" in cal:
                cal["conf_w"] = tuple(float(x) for x in cal["conf_w"])
            manifest = Manifest(
                name=str(doc["name"]),
                version=str(doc["version"]),
                architecture=str(doc["architecture"]),
                arch_params=dict(doc.get("arch_params", {})),
                embedding_dim=int(doc["embedding_dim"]),
                audio=AudioSpec(**doc["input"]["audio"]),
                video=VideoSpec(**doc["input"]["video"]),
                calibration=Calibration(**cal),
                weights_file=str(doc["weights"]["file"]),
                weights_sha256=str(doc["weights"]["sha256"]).lower(),
                training=dict(doc.get("training", {})),
                embedding_centering=float(doc.get("similarity", {}).get("embedding_centering", 0.0)),
                peak_smooth_frames=int(doc.get("similarity", {}).get("peak_smooth_frames", 0)),
            )
            _check_input_spec(manifest)
            return manifest
        except BundleError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"malformed manifest: {exc!r}") from exc


def _check_input_spec(m: Manifest) -> None:
    """Input settings no model can have been trained with (a review: sample_rate 0 loaded, and
    every job then failed "audio must be 0 Hz, got 16000")."""
    a, v = m.audio, m.video
    for name, value in (("input.audio.sample_rate", a.sample_rate), ("input.audio.n_fft", a.n_fft),
                        ("input.audio.win_length", a.win_length), ("input.audio.hop_length", a.hop_length),
                        ("input.audio.n_mels", a.n_mels), ("input.audio.steps_per_frame", a.steps_per_frame),
                        ("input.video.roi_height", v.roi_height), ("input.video.roi_width", v.roi_width),
                        ("embedding_dim", m.embedding_dim)):
        if not (type(value) is int and value > 0):  # (a bool is an int to isinstance)
            raise BundleError(f"malformed manifest: {name} must be a positive integer, got {value!r}")
    cal = m.calibration
    floats = {"input.audio.f_min": a.f_min, "input.audio.f_max": a.f_max, "input.audio.log_floor": a.log_floor,
              "similarity.embedding_centering": m.embedding_centering,
              "calibration.score_a": cal.score_a, "calibration.score_b": cal.score_b,
              "calibration.conf_b": cal.conf_b, **{f"calibration.conf_w[{i}]": v for i, v in enumerate(cal.conf_w)}}
    for name, value in floats.items():
        # (NaN in f_max scored every job LOW_QUALITY without a word, a review)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BundleError(f"malformed manifest: {name} must be a finite number, got {value!r}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(bundle_dir: Path | str) -> Manifest:
    path = Path(bundle_dir) / MANIFEST_NAME
    if not Path(bundle_dir).is_dir():  # a file said "no manifest.json in bundle directory FILE"
        what = "not a directory" if Path(bundle_dir).exists() else "no such directory"
        raise BundleError(f"{what}: {bundle_dir} (a bundle is a directory holding {MANIFEST_NAME})")
    if not path.is_file():
        raise BundleError(f"no {MANIFEST_NAME} in bundle directory {bundle_dir}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from exc
    return Manifest.from_json(doc)


def load_bundle(bundle_dir: Path | str | None = None) -> tuple[Manifest, dict[str, Any]]:
    """Read the manifest, verify the weights' sha256, load tensors with safetensors (no pickle).

    Returns (manifest, state_dict). Raises BundleError on any problem.
    """
    from safetensors.torch import load_file  # local: keep manifest handling torch-free

    bundle_dir = Path(bundle_dir) if bundle_dir is not None else DEFAULT_BUNDLE_DIR
    manifest = read_manifest(bundle_dir)
    weights = bundle_dir / manifest.weights_file
    if not weights.is_file():
        raise BundleError(f"weights file {weights} is missing")
    actual = sha256_file(weights)
    if actual != manifest.weights_sha256:
        raise BundleError(
            f"checksum mismatch for {weights}: manifest {manifest.weights_sha256[:12]}..., "
            f"file {actual[:12]}..."
        )
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise BundleError(f"cannot load weights {weights}: {exc}") from exc
    return manifest, state


def save_bundle(bundle_dir: Path | str, manifest: Manifest, state: dict[str, Any]) -> Manifest:
    """Write weights (safetensors) and a manifest whose sha256 matches them. Returns the manifest."""
    from dataclasses import replace

    from safetensors.torch import save_file

    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    weights = bundle_dir / manifest.weights_file
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(weights))
    manifest = replace(manifest, weights_sha256=sha256_file(weights))
    (bundle_dir / MANIFEST_NAME).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return manifest
