"""Architecture registry: a bundle's ``architecture`` string -> a builder taking ``arch_params``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from model_store.architectures.ensemble import SyncNetEnsemble
from model_store.architectures.syncnet_lite import SyncNetLite

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "syncnet_lite_v1": SyncNetLite,
    # members' similarity curves averaged (ensemble.py); arch_params = {"members": [...]}
    "ensemble_v1": SyncNetEnsemble,
}


def build(architecture: str, arch_params: dict[str, Any], **kwargs: Any) -> nn.Module:
    try:
        builder = _REGISTRY[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; known: {', '.join(sorted(_REGISTRY))}"
        ) from None
    return builder(**arch_params, **kwargs)


def known() -> list[str]:
    return sorted(_REGISTRY)
