"""Build mouth-ROI training/evaluation datasets from real footage.

    python -m worker.tracking.prepare --src DIR_OR_FILE [...] --out .cache/roi/NAME [-j 1]

One ``.npz`` per clip (name = the clip's path relative to its --src root, '/' -> '__'):
    rois uint8 (T, 96, 96) GRAY8 mouth crops (zeros where no face)
    audio float32 (N,) 16 kHz mono, sample 0 = frame 0's time (see worker.media.decode)
    fps float (the clip's native rate, snapped: 25, 30000/1001 = 29.97..., 30)
    sample_rate int (16000)
    face_present, face_detected, bridged, occluded bool (T,)
    landmarks float32 (T, 40, 2) normalised to the ROI; landmarks_image (T, 40, 2) to the image
    roi_params float32 (T, 4) (cx, cy, side, angle) in source pixels; occlusion_score float32 (T,)
    frame_size int (2,) (H, W); av_start_offset_ms float (audio minus video start, compensated)
    source str (relative path), source_path str (absolute), tracking_ms float
    rois_rgb uint8 (T, 96, 96, 3) only with --rgb
Resumable: clips whose .npz exists are skipped. Failures go to OUT/failures.tsv and the run goes
on. At the end OUT/DONE holds a JSON summary (clips, frames, failures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from model_store.bundle import sha256_file

MEDIA_EXTENSIONS = {".mp4", ".mpg", ".mpeg", ".flv", ".webm", ".mov", ".mkv", ".avi", ".m4v"}
SAMPLE_RATE = 16000

_TRACKER = None


def find_clips(sources: list[str]) -> list[tuple[Path, str]]:
    """(absolute path, output stem) for every media file under the given dirs/files, sorted."""
    clips: list[tuple[Path, str]] = []
    for src in sources:
        p = Path(src).resolve()
        if p.is_file():
            clips.append((p, p.stem))
        elif p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in MEDIA_EXTENSIONS:
                    rel = f.relative_to(p).with_suffix("")
                    clips.append((f, "__".join(rel.parts)))
        else:
            raise SystemExit(f"error: no such file or directory: {src}")
    return clips


_KEEP_RGB = False


def _tracker():
    global _TRACKER
    if _TRACKER is None:
        from worker.tracking import MouthTracker

        _TRACKER = MouthTracker(roi_size=96, keep_rgb=_KEEP_RGB)
    return _TRACKER


def process_clip(path: Path, out_file: Path, source: str) -> dict:
    """Decode, track and save one clip; returns a summary dict (raises on failure)."""
    from worker.media.decode import TIMELINE_VERSION, _fps_fraction, probe, read_audio
    from worker.tracking.tracker import TRACKER_VERSION

    info = probe(path)
    if not info.has_video:
        raise ValueError("no video stream")
    if not info.has_audio:
        raise ValueError("no audio stream")
    # Audio decodes in its own ffmpeg process while the video is tracked (overlaps start-up).
    with ThreadPoolExecutor(max_workers=1) as ex:
        audio_future = ex.submit(read_audio, path, SAMPLE_RATE, info)
        res = _tracker().track_file(path, info=info)
        audio = audio_future.result()
    fps = float(_fps_fraction(info, None))
    # a per-process name: two runs sharing a cache (two evaluations at once) must not write one file
    tmp = out_file.with_name(f"{out_file.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(
        tmp,
        rois=res.rois, audio=audio.astype(np.float32), fps=np.float64(fps),
        sample_rate=np.int32(SAMPLE_RATE), face_present=res.face_present,
        face_detected=res.face_detected, bridged=res.bridged, occluded=res.occluded,
        landmarks=res.landmarks, landmarks_image=res.landmarks_image, roi_params=res.roi_params,
        occlusion_score=res.occlusion_score, frame_size=np.array(res.frame_size, np.int32),
        av_start_offset_ms=np.float64(info.av_start_offset_ms), source=np.str_(source),
        source_path=np.str_(str(path)), source_sha256=np.str_(sha256_file(path)),
        tracking_ms=np.float64(res.tracking_ms), timeline=np.int32(TIMELINE_VERSION),
        tracker=np.int32(TRACKER_VERSION),
        **({"rois_rgb": res.rois_rgb} if res.rois_rgb is not None else {}),
    )
    os.replace(tmp, out_file)
    return {
        "frames": res.n_frames, "fps": fps, "present": float(res.face_present.mean()),
        "occluded": float(res.occluded.mean()), "ms_per_frame": res.ms_per_frame(),
        "audio_s": len(audio) / SAMPLE_RATE, "video_s": res.n_frames / fps,
        "av_start_offset_ms": info.av_start_offset_ms,
    }


def _init_worker(keep_rgb: bool) -> None:
    global _KEEP_RGB
    _KEEP_RGB = keep_rgb


def _job(path: str, out_file: str, source: str) -> tuple[str, dict | None, str | None]:
    try:
        return source, process_clip(Path(path), Path(out_file), source), None
    except Exception as err:  # noqa: BLE001 - one bad clip must not stop the run
        msg = f"{type(err).__name__}: {err}".replace("\n", " ").replace("\t", " ")
        if os.environ.get("PREPARE_TRACEBACK"):
            traceback.print_exc()
        return source, None, msg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m worker.tracking.prepare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", nargs="+", required=True, help="media files and/or directories (recursive)")
    ap.add_argument("--out", required=True, help="output directory, e.g. .cache/roi/dev")
    ap.add_argument("-j", "--jobs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="process at most N clips (0 = all)")
    ap.add_argument("--rgb", action="store_true", help="also store rois_rgb (T, 96, 96, 3)")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = find_clips(args.src)
    if args.limit:
        clips = clips[: args.limit]
    todo = [(p, out / f"{stem}.npz", stem) for p, stem in clips if not (out / f"{stem}.npz").exists()]
    print(f"{len(clips)} clips, {len(clips) - len(todo)} already done, {len(todo)} to do -> {out}", flush=True)
    failures = out / "failures.tsv"
    (out / "DONE").unlink(missing_ok=True)  # a stale DONE must not tell anyone to start
    t0 = time.monotonic()
    n_ok = n_fail = 0

    def report(source: str, summary: dict | None, err: str | None) -> None:
        nonlocal n_ok, n_fail
        if err is None:
            n_ok += 1
            print(f"ok   {source}: {summary['frames']} frames @ {summary['fps']:.3f} fps, face "
                  f"{summary['present']:.0%}, occl {summary['occluded']:.0%}, "
                  f"{summary['ms_per_frame']:.1f} ms/frame, av start {summary['av_start_offset_ms']:+.0f} ms",
                  flush=True)
        else:
            n_fail += 1
            print(f"FAIL {source}: {err}", flush=True)
            with failures.open("a") as fh:
                fh.write(f"{source}\t{err}\n")

    _init_worker(args.rgb)
    if args.jobs <= 1:
        for p, f, stem in todo:
            report(*_job(str(p), str(f), stem))
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, initializer=_init_worker, initargs=(args.rgb,)) as pool:
            futs = [pool.submit(_job, str(p), str(f), stem) for p, f, stem in todo]
            for fut in as_completed(futs):
                report(*fut.result())

    # Summary over everything present (including clips done by earlier runs).
    frames = 0
    present = 0.0
    done = sorted(out.glob("*.npz"))
    done = [d for d in done if not d.name.endswith(".tmp.npz")]
    for d in done:
        with np.load(d) as z:
            fp = z["face_present"]
            frames += int(fp.shape[0])
            present += float(fp.sum())
    failed = failures.read_text().splitlines() if failures.exists() else []
    failed_now = sorted({line.split("\t")[0] for line in failed} - {d.stem for d in done})
    summary = {
        "clips_total": len(clips), "clips_done": len(done), "frames": frames,
        "face_present_share": present / max(1, frames), "failed": failed_now,
        "run_seconds": round(time.monotonic() - t0, 1), "this_run_ok": n_ok, "this_run_failed": n_fail,
    }
    if not args.limit:  # a partial run is not a finished dataset
        (out / "DONE").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary), flush=True)
    return 0 if not failed_now else 1


if __name__ == "__main__":
    sys.exit(main())
