"""Join trained bundles into one ensemble bundle (architecture ``ensemble_v1``).

    python -m model_store.training.ensemble --members DIR1,DIR2[,...] --out DIR

The members must share the input format (audio and video specs) and the scoring settings; their
weights are copied unchanged, side by side, and only the score/confidence calibration is fitted
again (on the same held-out clips as ``make_model``'s), since the averaged cosines are distributed
differently from any one member's. The manifest's ``dev_train_clips`` is the union of the members'
(a clip any member trained on is not held out from the ensemble). A member that is itself an
ensemble contributes its networks one by one, so an ensemble grows by a network without the others
being trained again: ``--members ensemble_dir,new_network_dir``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from model_store.architectures import build
from model_store.architectures.ensemble import ensemble_state, member_state
from model_store.bundle import BundleError, Manifest, load_bundle, save_bundle


def _networks(m: Manifest) -> tuple[list[dict], list[dict]]:
    """A bundle's networks: ([{architecture, arch_params}], [training record]) one per network (an
    ensemble's members, or the bundle itself)."""
    if m.architecture == "ensemble_v1":
        return list(m.arch_params["members"]), list(m.training.get("members") or [])
    return ([{"architecture": m.architecture, "arch_params": m.arch_params}],
            [{"bundle": m.scorer_name, "weights_sha256": m.weights_sha256, "training": m.training}])


def network_states(m: Manifest, state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """A bundle's weights, one state dict per network (see ``_networks``)."""
    if m.architecture == "ensemble_v1":
        return [member_state(state, i) for i in range(len(m.arch_params["members"]))]
    return [state]


def join_manifests(members: list[Manifest], name: str | None, version: str | None) -> Manifest:
    """The ensemble's manifest (calibration still the first member's; an ensemble member's networks
    are listed one by one). Raises ValueError when the members cannot be joined."""
    first = members[0]
    # the audio encoders may differ in reach (make_model --audio-context-layers): every member is
    # fed the widest context, and one that needs less ignores the rest
    audio_ctx = max(m.audio.context_frames for m in members)
    for m in members[1:]:
        for field in ("audio", "video", "embedding_centering", "peak_smooth_frames"):
            mine, theirs = getattr(m, field), getattr(first, field)
            if field == "audio":
                mine, theirs = replace(mine, context_frames=audio_ctx), replace(theirs, context_frames=audio_ctx)
            if mine != theirs:
                raise ValueError(f"{m.scorer_name} and {first.scorer_name} differ in {field}; "
                                 "ensemble members must share the input format and scoring settings")
    specs: list[dict] = []
    records: list[dict] = []
    for m in members:
        spec, record = _networks(m)
        specs += spec
        records += record
    datas = [m.training.get("data") or {} for m in members]
    trained = sorted({str(n) for d in datas for n in d.get("dev_train_clips", [])})
    held = sorted(set.intersection(*[{str(n) for n in d.get("dev_heldout_clips", [])} for d in datas]))
    return replace(
        first,
        name=name or first.name, version=version or first.version,
        architecture="ensemble_v1",
        arch_params={"members": specs},
        audio=replace(first.audio, context_frames=audio_ctx),
        embedding_dim=sum(m.embedding_dim for m in members),
        weights_sha256="",
        training={"data": {"dev_train_clips": trained, "dev_heldout_clips": held}, "members": records},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--members", required=True, help="comma-separated bundle directories")
    ap.add_argument("--out", required=True, help="the ensemble bundle's directory")
    ap.add_argument("--name", default=None, help="default: the first member's name")
    ap.add_argument("--version", default=None, help="default: the first member's version")
    ap.add_argument("--seed", type=int, default=1234, help="the calibration's window sampling")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--partial-caches", action="store_true",
                    help="fit the calibration on the tracked LRC-AR clips already cached (experiments)")
    args = ap.parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(args.threads)
    dirs = [Path(d.strip()) for d in args.members.split(",") if d.strip()]
    if len(dirs) < 2:
        raise SystemExit("--members: an ensemble needs at least two bundles")
    try:
        loaded = [load_bundle(d) for d in dirs]
        manifest = join_manifests([m for m, _ in loaded], args.name, args.version)
    except (BundleError, ValueError) as exc:
        raise SystemExit(f"--members: {exc}") from None
    model = build(manifest.architecture, manifest.arch_params)
    model.load_state_dict(ensemble_state([n for m, s in loaded for n in network_states(m, s)]))
    model.eval()

    from model_store.training.calibrate import fit_calibration
    from model_store.training.make_model import calibration_clips

    cal = fit_calibration(model, manifest, calibration_clips(manifest.audio, args.partial_caches), seed=args.seed)
    manifest = save_bundle(args.out, replace(manifest, calibration=cal), model.state_dict())
    print(json.dumps({"bundle": args.out, "members": [str(d) for d in dirs], "sha256": manifest.weights_sha256,
                      "calibration": vars(cal), "seconds": round(time.time() - t0)}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
