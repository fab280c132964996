"""Contact sheet of prepared ROI datasets, for eyeballing crops (mouth-centred? stable?).

    python -m worker.tracking.contact_sheet .cache/roi/dev --out /tmp/roi_sheet.png [--clips 16 --cols 12]

One row per clip: ``cols`` ROIs evenly spaced over the clip, then ``cols`` consecutive frames
from the middle (consecutive frames show jitter), and the clip name's first letters are not
drawn (no font dependency); the row order is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def sheet(npz_files: list[Path], cols: int) -> np.ndarray:
    rows = []
    for f in npz_files:
        with np.load(f) as z:
            rois = z["rois"]
        t = len(rois)
        spread = np.linspace(0, t - 1, cols).astype(int)
        mid = max(0, t // 2 - cols // 2)
        consecutive = np.arange(mid, min(t, mid + cols))
        tiles = [rois[i] for i in spread] + [np.full_like(rois[0], 255)] + [rois[i] for i in consecutive]
        while len(tiles) < 2 * cols + 1:
            tiles.append(np.zeros_like(rois[0]))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    import cv2

    ap = argparse.ArgumentParser(prog="python -m worker.tracking.contact_sheet")
    ap.add_argument("dataset", help="folder of .npz files written by worker.tracking.prepare")
    ap.add_argument("--out", required=True)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--cols", type=int, default=10)
    args = ap.parse_args(argv)
    files = sorted(Path(args.dataset).glob("*.npz"))
    if not files:
        raise SystemExit(f"error: no .npz files in {args.dataset}")
    pick = [files[i] for i in np.linspace(0, len(files) - 1, min(args.clips, len(files))).astype(int)]
    img = sheet(pick, args.cols)
    cv2.imwrite(args.out, img)
    for i, f in enumerate(pick):
        print(f"row {i}: {f.stem}")
    print(f"wrote {args.out} {img.shape[1]}x{img.shape[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
