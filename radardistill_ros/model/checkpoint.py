"""Checkpoints: ``{"format", "config", "digest", "modality", "state_dict", "extra"}`` in one file.

The config dict and its digest travel with the weights; loading against a config with another
digest is refused (:class:`CheckpointError`) instead of silently mis-loading. Sparse-conv weights
have one layout for both backends, so a checkpoint loads whichever backend the model uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from radardistill_ros.config import Config, config_from_dict
from radardistill_ros.model.detector import Modality, PillarNetDetector, build_model

FORMAT = "radardistill_ros.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint does not match the requested config/modality or is not ours."""


def save_checkpoint(path: str | Path, model: nn.Module, cfg: Config, modality: Modality,
                    extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s state dict with ``cfg`` (dict + digest) and ``modality``."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, "config": cfg.to_dict(), "digest": cfg.digest(), "modality": modality,
                "state_dict": model.state_dict(), "extra": extra or {}}, str(path))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (weights on CPU); checks the format marker."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    return ckpt


def load_checkpoint(path: str | Path, cfg: Config | None = None, modality: Modality | None = None,
                    model: nn.Module | None = None) -> tuple[PillarNetDetector | nn.Module, Config]:
    """Load weights; returns (model, config).

    ``cfg``: expected config (digest must match, else :class:`CheckpointError`; it is returned,
    so its post-processing and training sections apply); None = the checkpoint's own.
    ``modality``: expected modality (checked) or None. ``model``: load into it (strict); None =
    build one with :func:`build_model` (eval mode).
    """
    ckpt = read_checkpoint(path)
    stored = config_from_dict(ckpt["config"])
    if stored.digest() != ckpt["digest"]:
        raise CheckpointError(f"{path}: stored digest {ckpt['digest'][:12]} does not match its own config "
                              f"(digest {stored.digest()[:12]}): the file is corrupt or was edited")
    if cfg is not None and cfg.digest() != ckpt["digest"]:
        raise CheckpointError(
            f"{path}: config digest mismatch: checkpoint was trained with config {stored.name!r} "
            f"(digest {ckpt['digest'][:12]}), requested config {cfg.name!r} (digest {cfg.digest()[:12]})")
    if modality is not None and modality != ckpt["modality"]:
        raise CheckpointError(f"{path}: checkpoint modality is {ckpt['modality']!r}, requested {modality!r}")
    if model is None:
        model = build_model(stored, ckpt["modality"])
        model.eval()
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model, stored if cfg is None else cfg
