"""The inference-backend interface for the dense part (x_conv4 -> head outputs) and its errors.

Every backend (torch, onnxruntime, tensorrt) takes x_conv4 ``(1, C4, H, W)`` float32 and returns
the head outputs as numpy: a list over ``conventions.TASKS`` of dicts keyed by
``model.head.HEAD_KEYS`` (docs/architecture.md, "Head outputs"), maps ``(1, C, H, W)`` float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from radardistill_ros.config import Config
from radardistill_ros.conventions import TASKS

#: Head outputs as numpy: list over task groups of ``{key: (B, C, H, W) float32}``.
HeadMaps = list[dict[str, np.ndarray]]

#: Backend kinds understood by :func:`radardistill_ros.backends.create_backend`.
BACKEND_KINDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")

#: Name of the exported graph's single input.
INPUT_NAME = "x_conv4"


class BackendError(RuntimeError):
    """A backend cannot serve this model / config (wrong file, shape, option)."""


class BackendUnavailable(BackendError):
    """The backend's runtime (library, GPU, execution provider) is not installed here; the
    message names what to install."""


class ModelMismatchError(BackendError):
    """An exported model or engine was built for another config (digest) or format."""


@runtime_checkable
class InferenceBackend(Protocol):
    """Dense-part inference: ``infer(x_conv4 (1, C4, H, W) float32) -> HeadMaps``."""

    name: str

    def infer(self, x_conv4: np.ndarray) -> HeadMaps:
        """Head outputs (list over tasks of ``{key: (1, C, H, W) float32}``) for one x_conv4."""
        ...


def input_shape(cfg: Config, batch: int = 1) -> tuple[int, int, int, int]:
    """x_conv4 shape ``(batch, C4, H, W)`` of a config's BEV grid."""
    h, w = cfg.grid.bev_shape
    return (batch, cfg.model.backbone_channels[3], h, w)


def as_input_array(x_conv4: Any, expected: Sequence[int]) -> np.ndarray:
    """x_conv4 (numpy array or CPU/GPU torch tensor) -> C-contiguous float32 numpy of shape
    ``expected``; a wrong shape is a ``ValueError`` naming both shapes."""
    if hasattr(x_conv4, "detach"):  # torch tensor: no torch import needed here
        x_conv4 = x_conv4.detach().cpu().numpy()
    x = np.ascontiguousarray(x_conv4, dtype=np.float32)
    if tuple(x.shape) != tuple(expected):
        raise ValueError(f"x_conv4 has shape {tuple(x.shape)}, the model expects {tuple(expected)}")
    return x


def group_outputs(flat: Sequence[np.ndarray], names: Sequence[str],
                  tasks: Sequence[Sequence[str]] = TASKS) -> HeadMaps:
    """Flat outputs named ``task{t}.{key}`` -> list over tasks of ``{key: array}``."""
    out: HeadMaps = [{} for _ in tasks]
    for name, arr in zip(names, flat):
        task, key = name.split(".", 1)
        out[int(task.removeprefix("task"))][key] = arr
    return out
