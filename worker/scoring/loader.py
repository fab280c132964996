"""Build the scorer from configuration: the bundle's model, or the heuristic when it cannot load."""

from __future__ import annotations

import logging
from pathlib import Path

from model_store.bundle import DEFAULT_BUNDLE_DIR, BundleError, load_bundle
from worker.scoring.heuristic import HeuristicScorer
from worker.scoring.postprocess import ScorerConfig

log = logging.getLogger(__name__)


def load_scorer(bundle_dir: str | Path | None = None, config: ScorerConfig | None = None,
                device: str = "auto", allow_fallback: bool = True):
    """The ModelScorer for ``bundle_dir`` (default: the bundled model), routed with the bundle's
    narrowband companion where it has one and ``config.narrowband`` is on (``routed``).

    A missing bundle, checksum mismatch or load failure gives the HeuristicScorer (with a loud
    log line) unless ``allow_fallback`` is False, in which case the BundleError propagates. A
    device that does not exist here (DeviceError) always propagates: the heuristic is a stand-in
    for a broken bundle, not for a missing GPU.
    """
    from worker.scoring.routed import with_narrowband
    from worker.scoring.scorer import ModelScorer, select_device

    select_device(device)
    try:
        manifest, state = load_bundle(bundle_dir)
        scorer = ModelScorer(manifest, state, config, device=device)
        if not scorer.config.narrowband:
            return scorer
        return with_narrowband(scorer, state, Path(bundle_dir) if bundle_dir is not None else DEFAULT_BUNDLE_DIR,
                               config, device)
    except (BundleError, ValueError, RuntimeError, OSError) as exc:
        if not allow_fallback:
            raise
        return HeuristicScorer(config, reason=str(exc))


def load_default_scorer(device: str = "auto", config: ScorerConfig | None = None):
    return load_scorer(None, config, device)
