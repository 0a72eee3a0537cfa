"""Global augmentation: flips, rotation, scaling, translation — the ONE place that knows which
columns are positions and which are vectors.

A :class:`GlobalTransform` is the similarity ``p' = s * Rz(theta) @ F @ p + t`` in the ego frame,
with ``F = diag(fx, fy, 1)`` (``fx = -1`` when ``flip_x`` negates x, ``fy = -1`` when ``flip_y``
negates y), applied in the order flip -> rotate -> scale -> translate (as OpenPCDet's
``random_world_flip / rotation / scaling / translation``). Per array layout
(:mod:`radardistill_ros.conventions`):

* positions (x, y, z): ``A p + t`` with ``A = s Rz(theta) F`` — radar cols 0:3, LiDAR cols 0:3,
  box centres cols 0:3;
* vectors (vx, vy): ``A[:2, :2] v`` (flipped, rotated AND scaled, never translated) — radar
  (vx_comp, vy_comp) cols 4:6 and box velocities cols 7:9. The authors' code forgets the radar
  velocities; here they cannot be forgotten;
* box sizes (l, w, h) cols 3:6: ``* s``; box yaw col 6: heading ``(cos, sin)`` mapped by ``A`` ->
  ``atan2`` (a flip mirrors it: flip_y gives ``-yaw``, flip_x gives ``pi - yaw``);
* everything else (rcs, intensity, time_lag) is left unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radardistill_ros.config import AugmentConfig
from radardistill_ros.geometry import rotz, wrap_angle

__all__ = ["COLUMNS", "Augmented", "GlobalTransform", "apply_transform", "augment", "sample_transform"]

#: Which columns of each array layout are positions (x, y, z) and which are 2D vectors (vx, vy).
COLUMNS: dict[str, dict[str, slice | int | None]] = {
    "radar": {"position": slice(0, 3), "vector": slice(4, 6)},
    "lidar": {"position": slice(0, 3), "vector": None},
    "boxes": {"position": slice(0, 3), "vector": slice(7, 9), "size": slice(3, 6), "yaw": 6},
}


@dataclass(frozen=True)
class GlobalTransform:
    """``p' = scale * Rz(rotation) @ diag(fx, fy, 1) @ p + translation`` (ego frame, metres, rad)."""

    flip_x: bool = False
    flip_y: bool = False
    rotation: float = 0.0
    scale: float = 1.0
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def linear(self) -> np.ndarray:
        """3x3 linear part ``A = s Rz(theta) F``."""
        f = np.diag([-1.0 if self.flip_x else 1.0, -1.0 if self.flip_y else 1.0, 1.0])
        return self.scale * rotz(self.rotation) @ f

    @property
    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix of the transform."""
        m = np.eye(4)
        m[:3, :3] = self.linear
        m[:3, 3] = self.translation
        return m

    def inverse(self) -> GlobalTransform:
        """The transform undoing this one: ``F R(-theta) = R(-theta fx fy) F`` gives the same flips,
        rotation ``-theta * fx * fy``, scale ``1 / s``, translation ``-A^-1 t``."""
        sign = (-1.0 if self.flip_x else 1.0) * (-1.0 if self.flip_y else 1.0)
        t = -np.linalg.solve(self.linear, np.asarray(self.translation, dtype=np.float64))
        return GlobalTransform(self.flip_x, self.flip_y, float(-self.rotation * sign), 1.0 / self.scale,
                               (float(t[0]), float(t[1]), float(t[2])))


@dataclass(frozen=True)
class Augmented:
    """Transformed arrays (``None`` where no input was given); same shapes and dtypes as the input."""

    radar: np.ndarray | None
    lidar: np.ndarray | None
    boxes: np.ndarray | None


def sample_transform(rng: np.random.Generator, cfg: AugmentConfig) -> GlobalTransform:
    """Draw a transform: each enabled flip with p = 0.5, rotation ~ U(-cfg.rotation, cfg.rotation),
    scale ~ U(cfg.scale), translation ~ N(0, cfg.translation_std^2) per axis. Deterministic given
    the generator state (always consumes the same number of draws)."""
    u = rng.random(2)
    rotation = float(rng.uniform(-cfg.rotation, cfg.rotation))
    scale = float(rng.uniform(cfg.scale[0], cfg.scale[1]))
    t = rng.normal(0.0, 1.0, 3) * cfg.translation_std
    return GlobalTransform(bool(cfg.flip_x and u[0] < 0.5), bool(cfg.flip_y and u[1] < 0.5), rotation, scale,
                           (float(t[0]), float(t[1]), float(t[2])))


def _apply(arr: np.ndarray | None, kind: str, tf: GlobalTransform) -> np.ndarray | None:
    if arr is None:
        return None
    x = np.asarray(arr)
    # compute in the array's own float precision (float32 point clouds stay float32: 2x faster)
    ft = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    a = tf.linear.astype(ft)
    cols = COLUMNS[kind]
    out = x.copy()
    pos = cols["position"]
    out[:, pos] = x[:, pos] @ a.T + np.asarray(tf.translation, dtype=ft)
    vec = cols["vector"]
    if vec is not None:
        out[:, vec] = x[:, vec] @ a[:2, :2].T
    if kind == "boxes":
        out[:, cols["size"]] = x[:, cols["size"]] * tf.scale
        yaw = x[:, cols["yaw"]].astype(np.float64)
        heading = np.stack([np.cos(yaw), np.sin(yaw)], axis=1) @ a[:2, :2].T
        out[:, cols["yaw"]] = wrap_angle(np.arctan2(heading[:, 1], heading[:, 0]))
    return out


def apply_transform(
    tf: GlobalTransform,
    radar: np.ndarray | None = None,
    lidar: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
) -> Augmented:
    """Apply ``tf`` consistently to radar ``(N, 6)``, LiDAR ``(N, 5)`` and boxes ``(M, 9)`` (see
    the module docstring for the per-column rule). Inputs are not modified."""
    return Augmented(_apply(radar, "radar", tf), _apply(lidar, "lidar", tf), _apply(boxes, "boxes", tf))


def augment(
    rng: np.random.Generator,
    cfg: AugmentConfig,
    radar: np.ndarray | None = None,
    lidar: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
) -> tuple[Augmented, GlobalTransform]:
    """Sample a transform with :func:`sample_transform` and apply it; returns (arrays, transform)."""
    tf = sample_transform(rng, cfg)
    return apply_transform(tf, radar, lidar, boxes), tf
