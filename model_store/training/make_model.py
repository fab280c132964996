"""One network of the default bundle, from scratch (`make model` runs this once per seed in
MEMBER_SEEDS, joins the networks with model_store.training.ensemble into the teacher, and runs it
once more with --from-bundle TEACHER --teacher TEACHER: from 1.6.0 the shipped bundle is the
teacher's first network distilled from the teacher, docs/training.md).

1. Track mouths in ../shared/data/train-av (GRID s1, LRC-AR) and dev-clips into .cache/roi/
   (resumable; skipped when done).
2. Generate synthetic training clips (seeds from 1_000_000, never used by tests) in memory.
3. Train SyncNet-lite (contrastive, see train.py) on synthetic + train-av + the dev clips of every
   speaker but TEST_SPEAKERS and the off-sync clips; validate on synthetic validation seeds and
   on the dev clips not trained on.
   Then a fine-tuning stage (500 steps at a lower rate, the last step kept): English speech only
   (the trained dev clips 8x, the synthetic clips, GRID s1 if --sources has it) with the video
   side frozen, so the audio encoder adapts to English (1.4.0; docs/training.md has the
   measurements).
4. Fit the score/confidence calibration on held-out windows, report ECE, write the bundle.

`--cv-fold 1|2` trains a cross-validation fold on half the dev speakers instead (`make model-cv`);
`sync-scorer eval-real --cv-folds` measures the recipe with them on speakers they never saw.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from model_store.architectures import build
from model_store.architectures.ensemble import member_state
from model_store.architectures.syncnet_lite import audio_context_frames
from model_store.bundle import (
    AudioSpec,
    BundleError,
    Calibration,
    Manifest,
    VideoSpec,
    load_bundle,
    read_manifest,
    save_bundle,
)
from model_store.training.data import Clip, WindowSampler, load_roi_dir, make_clip
from model_store.training.train import TrainConfig, shape_statistics, train
from worker.evaluation.degrade import PHONE_RATE_HZ
from worker.evaluation.real import speaker_group  # dev clips of one speaker share a group

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
CACHE = REPO / ".cache" / "roi"
SYNTH_TRAIN_SEED = 1_000_000
SYNTH_VAL_SEED = 2_000_000
# a lighter frame CNN than the architecture's default: half the FLOPs per frame, so a 16-frame
# block fits the CPU budget and training runs twice as many steps in the same time
ARCH_PARAMS: dict = {"video_channels": [24, 32, 48, 64]}
# dev clips whose own audio is suspected off-sync, never trained on (training on them at 0 ms would
# teach the model their offset): the two the dev-clips README flags, and the two whose own audio
# both a model that never trained on them (1.2.0) and the classical baseline put >= 2 frames off in
# the same direction (eval-real's cross-check; docs/training.md)
SUSPECT_CLIPS = ("edtalk_obama", "dfdc_real_lynaeydofd", "mimictalk_theresa_may", "vox_pcavs_00104")
# dev speakers the shipped bundle never trains on: the clips tests/unit/test_score_real.py scores,
# so the test suite's real-footage checks measure speakers the shipped weights never saw
TEST_SPEAKERS = ("cremad_1001", "grid_swiz3n", "vox_pcavs_620900105", "vox_pcavs_517600055")
TRAIN_SOURCES = {"lrc_ar": "train-av/lrc_ar", "grid_s1": "train-av/grid_s1"}
CAL_EVERY = 10  # every 10th LRC-AR clip is held out to fit the calibration (never trained on)


def ensure_roi_cache(name: str, src: Path, partial: bool = False) -> Path:
    out = CACHE / name
    if (out / "DONE").exists() or partial:
        return out
    if not src.exists():
        raise SystemExit(f"training data folder {src} is missing")
    print(f"tracking mouths in {src} -> {out} (resumable)", flush=True)
    subprocess.run([sys.executable, "-m", "worker.tracking.prepare", "--src", str(src), "--out", str(out),
                    "-j", "2"], check=True)
    return out


def synth_clips(n: int, seed0: int, spec: AudioSpec, seconds: float = 4.0) -> list[Clip]:
    from worker.synth import SynthOptions, generate_clip

    clips = []
    for i in range(n):
        seed = seed0 + i
        rng = np.random.default_rng(seed)
        flags = rng.random(6) < 0.2
        opts = SynthOptions(fps=float(rng.choice([25.0, 30.0])), low_light=bool(flags[0]),
                            motion_blur=bool(flags[1]), occlusion=bool(flags[2]), noise=bool(flags[3]),
                            head_motion=bool(flags[4]), silence_gaps=bool(flags[5]))
        cached = REPO / ".cache" / "synth" / f"{seed}_{seconds:g}.npz"
        if cached.exists():
            z = np.load(cached)
            frames, audio, fps = z["frames"], z["audio"], float(z["fps"])
        else:  # generated once, then cached: deterministic per seed
            c = generate_clip(seed, seconds, 0.0, opts)
            frames, audio, fps = c.frames, c.audio, c.fps
            cached.parent.mkdir(parents=True, exist_ok=True)
            # written aside and renamed: runs started side by side share the cache
            tmp = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, frames=frames, audio=audio, fps=fps)
            os.replace(tmp, cached)
        clips.append(make_clip(f"synth{seed}", f"synth{seed}", frames, audio, fps, spec, source="synth"))
    return clips


def calibration_clips(spec: AudioSpec, partial: bool = False) -> list[Clip]:
    """The clips every bundle's calibration is fitted on: the held-out LRC-AR clips and the synthetic
    validation seeds (what ``main`` uses; for bundles made from other bundles' weights)."""
    d = ensure_roi_cache("lrc_ar", SHARED / TRAIN_SOURCES["lrc_ar"], partial)
    real = load_roi_dir(d, spec, group_of=lambda s: "lrc_ar")[::CAL_EVERY] if d.is_dir() else []
    return real + synth_clips(40, SYNTH_VAL_SEED, spec)


def telephone_clips(clips: list[Clip]) -> list[Clip]:
    """``clips`` with their audio through PHONE_RATE_HZ (eval-real's phone degradation)."""
    from worker.evaluation.degrade import telephone  # torchaudio: imported when asked for

    return [replace(c, audio=telephone(c.audio, 16000)) if c.audio is not None else c for c in clips]


def arch_params(shape_input: bool = False, audio_context_layers: int = 0,
                video_channels: list[int] | None = None, video_blocks: int = 0) -> dict:
    """The recipe's architecture parameters, with the lip-landmark view as a second input or not,
    the audio encoder's wider context or not, and the frame CNN's widths (default the recipe's) and
    residual blocks (the options that are off are absent from the manifest)."""
    from worker.tracking.geometry import N_SHAPE_FEATURES

    params = dict(ARCH_PARAMS)
    if video_channels:
        params["video_channels"] = list(video_channels)
    if video_blocks:
        params["video_blocks_per_stage"] = video_blocks
    if shape_input:
        params["shape_features"] = N_SHAPE_FEATURES
    if audio_context_layers:
        params["audio_context_layers"] = audio_context_layers
    return params


def recipe_options(params: dict) -> dict:
    """A manifest's syncnet_lite_v1 parameters as ``arch_params``' keyword arguments."""
    return {"shape_input": bool(params.get("shape_features")),
            "audio_context_layers": int(params.get("audio_context_layers", 0)),
            "video_channels": list(params.get("video_channels", ARCH_PARAMS["video_channels"])),
            "video_blocks": int(params.get("video_blocks_per_stage", 0))}


def set_shape_statistics(model: torch.nn.Module, clips: list[Clip]) -> None:
    """Standardise a shape-input network's lip-shape measures with the training clips' statistics
    (frames with a face only)."""
    enc = getattr(model, "shape_encoder", None)
    stats = shape_statistics(clips) if enc is not None else None
    if stats is None:
        return
    enc.mean.copy_(torch.from_numpy(stats[0]).float())
    enc.std.copy_(torch.from_numpy(stats[1]).float())


def reuse_weights(model: torch.nn.Module, bundle_dir: Path) -> dict:
    """Load another bundle's weights into ``model`` (same architecture and parameters); returns its
    training record, so the new manifest says how those weights were made."""
    src, state = _load_bundle_arg("--from-bundle", bundle_dir, load_bundle)
    arch, params, training, member = src.architecture, src.arch_params, src.training, ""
    if arch == "ensemble_v1":  # its first network (the seed-1234 member of `make model`)
        first = src.arch_params["members"][0]
        arch, params, member = first["architecture"], first.get("arch_params", {}), ", member 0"
        state = member_state(state, 0)
        training = (src.training.get("members") or [{}])[0].get("training") or {}
    if arch != "syncnet_lite_v1" or params != arch_params(**recipe_options(params)):
        raise SystemExit(f"--from-bundle {bundle_dir}: {arch} {params} is not this recipe's "
                         f"syncnet_lite_v1 {ARCH_PARAMS} (with or without its make_model options)")
    _load_state("--from-bundle", bundle_dir, model, state)
    kept = {k: v for k, v in training.items() if k in ("config", "history", "best_step", "train_seconds")}
    return {**kept, "weights_from": f"{src.scorer_name}{member} (sha256 {src.weights_sha256})"}


def _channels(text: str) -> list[int]:
    """``--video-channels`` "32,64,96,128" -> [32, 64, 96, 128] (at least two positive widths)."""
    try:
        widths = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if len(widths) < 2 or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"need at least two positive widths: {text!r}")
    return widths


def _load_bundle_arg(flag: str, bundle_dir: Path, loader):
    """``loader(bundle_dir)`` (bundle.load_bundle or read_manifest) for a command-line argument: a
    missing or broken bundle is a one-line exit."""
    try:
        return loader(bundle_dir)
    except BundleError as exc:
        raise SystemExit(f"{flag} {bundle_dir}: {exc}") from None


def _load_state(flag: str, bundle_dir: Path, model: torch.nn.Module, state: dict) -> None:
    """Load ``state`` into ``model``; only the training-only logit scale may be absent (an
    ensemble does not keep it), anything else that does not fit is a one-line exit."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "logit_scale"]:
        raise SystemExit(f"{flag} {bundle_dir}: weights do not fit (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")


def load_teacher(bundle_dir: Path) -> tuple[torch.nn.Module, str]:
    """A bundle's model, frozen, for distillation (an ensemble, typically), and how to name it in
    the student's manifest."""
    man, state = _load_bundle_arg("--teacher", bundle_dir, load_bundle)
    teacher = build(man.architecture, man.arch_params)
    _load_state("--teacher", bundle_dir, teacher, state)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval(), f"{man.scorer_name} (sha256 {man.weights_sha256})"


def sampling_weights(clips: list[Clip], dev_names: set[str], dev_weight: float) -> np.ndarray:
    """Sampling weight per clip: by frames, with the synthetic share held near 30%. GRID is one
    speaker: its clips count 0.4x so it cannot dominate the real samples; the trained dev clips
    count ``dev_weight`` x."""
    w = np.array([c.n_frames * (0.4 if c.group == "grid_s1" else dev_weight if c.name in dev_names else 1.0)
                  for c in clips], dtype=np.float64)
    is_syn = np.array([c.source == "synth" for c in clips])
    if is_syn.any() and not is_syn.all():
        w[is_syn] *= 0.3 / (w[is_syn].sum() / w.sum())
        w[~is_syn] *= 0.7 / (w[~is_syn].sum() / w.sum())
    return w


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1800)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--synth-clips", type=int, default=400)
    ap.add_argument("--out", default=str(REPO / "model_store" / "bundles" / "default"))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--version", default="1.4.0")
    ap.add_argument("--name", default=None,
                    help="the bundle's model name (default syncnet-lite, syncnet-lite-cvN for --cv-fold N)")
    ap.add_argument("--split-seed", type=int, default=1234,
                    help="seed of the dev speakers' split into folds, apart from --seed, so that a rerun with "
                         "another training seed keeps the same held-out speakers")
    ap.add_argument("--no-real", action="store_true", help="synthetic data only")
    ap.add_argument("--dev-train-fraction", type=float, default=1.0,
                    help="share of dev-clip speakers trained on (default all but --hold-out-speakers); the others "
                         "are only evaluated (their names are recorded in the manifest so evaluations hold them out)")
    ap.add_argument("--cv-fold", type=int, choices=(1, 2), default=None,
                    help="train a cross-validation fold instead of the shipped bundle: half the dev speakers (fold 2: "
                         "the other half) and no --hold-out-speakers, named syncnet-lite-cvN; `sync-scorer eval-real "
                         "--cv-folds` judges every dev clip with the fold that never saw its speaker")
    ap.add_argument("--sources", default="lrc_ar",
                    help="comma-separated train-av sources to track and train on (lrc_ar, grid_s1); "
                         "default lrc_ar: 30+ speakers; grid_s1 is one speaker")
    ap.add_argument("--partial-caches", action="store_true",
                    help="use the tracked clips already cached without tracking the rest (experiments)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest on a shared 2-core machine: OpenMP spin-waits "
                         "collapse under oversubscription)")
    ap.add_argument("--delay-frames", type=int, default=0,
                    help="VideoSpec.delay_frames: the causal 7-frame video head's embedding describes "
                         "the frame this many frames back (3 = centred context)")
    ap.add_argument("--audio-noise", type=float, default=0.0,
                    help="share of training windows whose audio gets babble or tilted noise at 0-25 dB SNR")
    ap.add_argument("--edge-jitter", type=int, default=0,
                    help="move the audio's clip edges inwards by up to this many frames in training windows")
    ap.add_argument("--voice-warp", type=float, default=0.0,
                    help="half the training windows get their mel axis stretched by up to this share (another "
                         "voice: vocal tract length perturbation) and a band of up to 4 mel bins blanked")
    ap.add_argument("--band-limit", type=float, default=0.0,
                    help="share of training windows whose audio is heard through a telephone band "
                         "(data.MelBands: a 3-4 kHz top, sometimes a 0.1-0.3 kHz bottom); with --teacher "
                         "the teacher hears the full band")
    ap.add_argument("--dev-weight", type=float, default=1.0,
                    help="sampling weight of the trained dev-clip speakers' frames relative to other real frames")
    ap.add_argument("--suspect-clips", default=",".join(SUSPECT_CLIPS),
                    help="dev clips (stems) whose own audio is suspected off-sync: never trained on")
    ap.add_argument("--hold-out-speakers", default=",".join(TEST_SPEAKERS),
                    help="comma list of dev speaker groups never trained on whatever the split (the clips the test "
                         "suite scores, so its real-footage checks measure speakers the bundle never saw)")
    ap.add_argument("--swap-dev-folds", action="store_true",
                    help="train on the dev speakers the default split holds out and hold out the others "
                         "(the second fold of a 2-fold cross-validation)")
    ap.add_argument("--centering", type=float, default=0.5,
                    help="share of each window's mean embedding the scorer removes before the cosines (manifest "
                         "similarity.embedding_centering; 0 for 1.1.0, 0.5 from 1.2.0)")
    ap.add_argument("--train-centering", type=float, default=0.0,
                    help="the same, in the training loss (0: the embeddings are trained as in 1.1.0)")
    ap.add_argument("--peak-smooth-frames", type=int, default=1,
                    help="the scorer averages each curve over +/- this many frames before picking the peak "
                         "(manifest similarity.peak_smooth_frames; 0 for 1.1.0, 1 from 1.2.0)")
    ap.add_argument("--from-bundle", default=None,
                    help="take the weights of this bundle (same architecture) instead of the first training stage; "
                         "the fine-tuning stage still runs on them (--finetune-steps 0: only the similarity "
                         "settings and the calibration are redone, as 1.2.0 from 1.1.0's weights)")
    ap.add_argument("--shape-loss", type=float, default=0.0,
                    help="weight of the mouth-shape pretext loss (frame features predict lip-landmark shape "
                         "measures; real clips only); 0 for 1.1.0")
    ap.add_argument("--shape-input", action="store_true",
                    help="the lip-landmark view as a second input: per-frame mouth-shape measures added to the "
                         "frame CNN's features (frames without landmarks still score); off for 1.7.0")
    ap.add_argument("--shape-dropout", type=float, default=0.3,
                    help="with --shape-input: share of training windows whose landmarks are hidden")
    ap.add_argument("--audio-context-layers", type=int, default=0,
                    help="residual dilated blocks on the audio encoder, each widening its view by two frames a "
                         "side (0: 250 ms, as 1.7.0; 2: 570 ms)")
    ap.add_argument("--video-channels", type=_channels, default=list(ARCH_PARAMS["video_channels"]),
                    help="the frame CNN's widths, stem then each stride-2 stage (default %(default)s, as 1.7.0)")
    ap.add_argument("--video-blocks", type=int, default=0,
                    help="residual blocks after each stride-2 stage of the frame CNN but the last (0 as 1.7.0)")
    ap.add_argument("--subframe-targets", action="store_true",
                    help="the window and frame losses' targets split between the two grid offsets around the "
                         "true offset (training shifts audio by up to 0.3 frame) instead of all on the nearest")
    ap.add_argument("--global-loss", type=float, default=0.0,
                    help="weight of the cross-window loss: every window's own audio at its true offset must beat other "
                         "clips' audio at their best offset with one threshold for all (the mismatched control's AUC)")
    ap.add_argument("--teacher", default=None,
                    help="a bundle (an ensemble, typically) whose window-loss distribution the network is also "
                         "trained to match (--distill-weight), in both stages: one network learning the "
                         "averaged curves of several")
    ap.add_argument("--distill-weight", type=float, default=1.0,
                    help="weight of the distillation term when --teacher is given")
    ap.add_argument("--distill-frame-weight", type=float, default=0.0,
                    help="weight of the per-frame distillation term (each frame's offset distribution) when "
                         "--teacher is given")
    ap.add_argument("--select-best", action=argparse.BooleanOptionalAction, default=None,
                    help="keep the best validation step (validation = the held-out dev speakers, so their numbers "
                         "are slightly optimistic) instead of the last. Default: on for --cv-fold runs (their "
                         "validation is the other half of the speakers), off for the shipped bundle (its only "
                         "held-out dev clips are the test suite's speakers and the off-sync ones)")
    ap.add_argument("--finetune-steps", type=int, default=500,
                    help="after training (or --from-bundle), this many more steps at --finetune-lr on "
                         "--finetune-sources, keeping the last step; 0 = none (1.3.0 had none; docs/training.md)")
    ap.add_argument("--finetune-lr", type=float, default=3e-4, help="peak learning rate of the fine-tuning stage")
    ap.add_argument("--finetune-dev-weight", type=float, default=8.0,
                    help="the trained dev clips' sampling weight in the fine-tuning stage (as --dev-weight)")
    ap.add_argument("--finetune-sources", choices=("english", "all"), default="english",
                    help="the fine-tuning stage's clips: English only (default: the trained dev clips, the synthetic "
                         "clips and GRID s1 if --sources has it; no LRC-AR), or all of the training clips (the control)")
    ap.add_argument("--finetune-freeze", choices=("none", "audio", "video"), default="video",
                    help="keep this side's weights fixed during the fine-tuning stage (audio: the audio encoder; "
                         "video: the frame encoder and the temporal head); their batch-norm statistics still adapt, "
                         "unless --finetune-freeze-stats")
    ap.add_argument("--finetune-freeze-stats", action="store_true",
                    help="keep the frozen side's batch-norm statistics too: that side of the new bundle is then "
                         "exactly its start bundle's (the narrowband bundle shares the video side, so a scorer "
                         "holding both encodes each frame once)")
    args = ap.parse_args(argv)
    if args.cv_fold:
        args.dev_train_fraction, args.swap_dev_folds, args.hold_out_speakers = 0.5, args.cv_fold == 2, ""
    if args.select_best is None:
        args.select_best = bool(args.cv_fold)
    # the bundles named on the command line are checked before the clips load (a minute), not after
    if args.from_bundle:  # the architecture is the source bundle's
        params = _load_bundle_arg("--from-bundle", Path(args.from_bundle), read_manifest).arch_params
        if params.get("members"):  # an ensemble's first network
            params = params["members"][0].get("arch_params", {})
        for key, value in recipe_options(params).items():
            setattr(args, key, value)
    if args.steps < 1 or args.finetune_steps < 0:
        raise SystemExit("--steps must be >= 1 and --finetune-steps >= 0")
    if args.audio_context_layers < 0:
        raise SystemExit("--audio-context-layers must be >= 0")
    if args.video_blocks < 0:
        raise SystemExit("--video-blocks must be >= 0")
    if not 0.0 <= args.shape_dropout <= 1.0:
        raise SystemExit("--shape-dropout must be in [0, 1]")
    if not 0.0 <= args.band_limit <= 1.0:
        raise SystemExit("--band-limit must be in [0, 1]")
    teacher, teacher_name = load_teacher(Path(args.teacher)) if args.teacher else (None, "")
    t0 = time.time()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    spec = AudioSpec(context_frames=audio_context_frames(args.audio_context_layers))
    vspec = VideoSpec(delay_frames=args.delay_frames)

    real_train: list[Clip] = []
    dev_train: list[Clip] = []
    real_cal: list[Clip] = []
    dev: list[Clip] = []
    if not args.no_real:
        names = [n.strip() for n in args.sources.split(",") if n.strip()]
        unknown = [n for n in names if n not in TRAIN_SOURCES]
        if unknown:
            raise SystemExit(f"unknown --sources {unknown}; known: {sorted(TRAIN_SOURCES)}")
        for name in names:
            src = SHARED / TRAIN_SOURCES[name]
            d = ensure_roi_cache(name, src, args.partial_caches)
            if not d.is_dir():
                continue
            loaded = load_roi_dir(d, spec, group_of=lambda s, n=name: n)
            real_cal += loaded[::CAL_EVERY] if name == "lrc_ar" else []
            real_train += [c for i, c in enumerate(loaded) if not (name == "lrc_ar" and i % CAL_EVERY == 0)]
        dev_dir = ensure_roi_cache("dev", SHARED / "dev-clips", args.partial_caches)
        dev = [c for c in load_roi_dir(dev_dir, spec, group_of=speaker_group)
               if not c.name.startswith("gen_")]
        # speaker split of the dev clips; clips whose own audio is suspected off-sync
        # (SUSPECT_CLIPS) are never trained on
        from model_store.training.data import split_groups

        suspect = {n.strip() for n in args.suspect_clips.split(",") if n.strip()}
        dev_train, dev = split_groups(dev, 1.0 - args.dev_train_fraction, seed=args.split_seed)
        if args.swap_dev_folds:
            dev_train, dev = dev, dev_train
        held = {g.strip() for g in args.hold_out_speakers.split(",") if g.strip()}
        unknown = held - {c.group for c in dev_train + dev}
        if unknown:
            raise SystemExit(f"--hold-out-speakers: no dev clips of {sorted(unknown)}")
        unknown = suspect - {c.name for c in dev_train + dev}
        if unknown:
            raise SystemExit(f"--suspect-clips: no dev clips named {sorted(unknown)}")
        keep_out = {c.name for c in dev_train if c.name in suspect or c.group in held}
        dev += [c for c in dev_train if c.name in keep_out]
        dev_train = [c for c in dev_train if c.name not in keep_out]
        real_train += dev_train
    print(f"real train clips {len(real_train)}, dev clips {len(dev)} ({time.time() - t0:.0f}s)", flush=True)
    syn_train = synth_clips(args.synth_clips, SYNTH_TRAIN_SEED, spec)
    syn_val = synth_clips(40, SYNTH_VAL_SEED, spec)
    print(f"synthetic clips ready ({time.time() - t0:.0f}s)", flush=True)

    clips = syn_train + real_train
    dev_names = {c.name for c in dev_train}
    w = sampling_weights(clips, dev_names, args.dev_weight)
    k = 6
    dl = vspec.delay_frames
    sampler = WindowSampler(clips, spec, vspec.context_frames, k, args.seed, weights=w, delay_frames=dl,
                            audio_noise_prob=args.audio_noise, edge_jitter_frames=args.edge_jitter,
                            voice_warp=args.voice_warp, band_limit_prob=args.band_limit)
    vals = {"synth": WindowSampler(syn_val, spec, vspec.context_frames, k, 7, delay_frames=dl)}
    if dev:
        vals["dev"] = WindowSampler(dev, spec, vspec.context_frames, k, 7, delay_frames=dl)
    params = arch_params(args.shape_input, args.audio_context_layers, args.video_channels, args.video_blocks)
    model = build("syncnet_lite_v1", params)
    set_shape_statistics(model, real_train)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, threads=args.threads,
                      select_best=args.select_best, embedding_centering=args.train_centering,
                      shape_loss_weight=args.shape_loss, global_loss_weight=args.global_loss,
                      subframe_targets=args.subframe_targets,
                      distill_weight=args.distill_weight if args.teacher else 0.0,
                      distill_frame_weight=args.distill_frame_weight if args.teacher else 0.0,
                      shape_dropout=args.shape_dropout)
    if args.from_bundle:
        report = reuse_weights(model, Path(args.from_bundle))
    else:
        report = {"config": asdict(cfg), **train(model, sampler, vals, cfg, spec.context_frames, teacher=teacher)}
    if teacher is not None:
        report["teacher"] = teacher_name
    if args.finetune_steps > 0:
        # the users' speech is English: a short low-rate stage on English speakers only, after the
        # LRC-AR pre-training taught the general mouth-sound correspondence
        ft_clips = [c for c in clips if c.group != "lrc_ar" or args.finetune_sources == "all"]
        ft_sampler = WindowSampler(ft_clips, spec, vspec.context_frames, k, args.seed + 1,
                                   weights=sampling_weights(ft_clips, dev_names, args.finetune_dev_weight),
                                   delay_frames=dl,
                                   audio_noise_prob=args.audio_noise, edge_jitter_frames=args.edge_jitter,
                                   voice_warp=args.voice_warp, band_limit_prob=args.band_limit)
        frozen = {"none": (), "audio": (model.audio_encoder,),
                  "video": (model.frame_encoder, model.video_head)
                  + ((model.shape_encoder,) if model.shape_encoder is not None else ())}[args.finetune_freeze]
        for part in frozen:
            part.requires_grad_(False)
        # the last step is kept: choosing one on the held-out speakers would flatter them
        ft_cfg = replace(cfg, steps=args.finetune_steps, lr=args.finetune_lr, seed=args.seed + 1, select_best=False)
        report["finetune"] = {"config": asdict(ft_cfg), "clips": len(ft_clips), "frozen": args.finetune_freeze,
                              "frozen_stats": args.finetune_freeze_stats,
                              **train(model, ft_sampler, vals, ft_cfg, spec.context_frames, teacher=teacher,
                                       fixed_stats=frozen if args.finetune_freeze_stats else ())}
        for part in frozen:
            part.requires_grad_(True)
    model.eval()

    from model_store.training.calibrate import fit_calibration

    manifest = Manifest(
        name=args.name or (f"syncnet-lite-cv{args.cv_fold}" if args.cv_fold else "syncnet-lite"), version=args.version,
        architecture="syncnet_lite_v1", arch_params=params,
        embedding_dim=128, audio=spec, video=vspec, calibration=Calibration(), embedding_centering=args.centering,
        peak_smooth_frames=args.peak_smooth_frames,
        weights_file="weights.safetensors", weights_sha256="",
        training={
            "data": {"synthetic_clips": len(syn_train), "synthetic_seed0": SYNTH_TRAIN_SEED,
                     "real_train_clips": len(real_train),
                     "real_sources": [TRAIN_SOURCES[n] for n in args.sources.split(",") if n.strip()]
                     + ["dev-clips (speaker split)"],
                     "dev_train_clips": sorted(c.name for c in dev_train),
                     "dev_heldout_clips": sorted(c.name for c in dev)},
            # the window sampler's audio augmentations (both stages)
            "augment": {"audio_noise": args.audio_noise, "edge_jitter_frames": args.edge_jitter,
                        "voice_warp": args.voice_warp, "band_limit": args.band_limit},
            **report,
        },
    )
    cal_clips = real_cal + syn_val
    if args.band_limit >= 1.0:
        # a narrowband bundle (every window heard through a telephone band) is asked only about
        # telephone-band audio (scoring/routed.py): its scores are calibrated on such audio
        cal_clips = telephone_clips(cal_clips)
    cal = fit_calibration(model, manifest, cal_clips, seed=args.seed)
    if args.band_limit >= 1.0:
        cal = replace(cal, fitted_on=cal.fitted_on + f"; audio through {PHONE_RATE_HZ} Hz")
    manifest = replace(manifest, calibration=cal, training={**manifest.training, "total_seconds": round(time.time() - t0)})
    manifest = save_bundle(args.out, manifest, model.state_dict())
    print(json.dumps({"bundle": args.out, "sha256": manifest.weights_sha256, "calibration": vars(cal),
                      "seconds": round(time.time() - t0)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
