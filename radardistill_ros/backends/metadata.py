"""Metadata that travels with an exported dense part (ONNX ``metadata_props``, and the JSON
sidecar of a TensorRT engine), and the check that refuses a model built for another config.

Keys are ``radardistill.<field>``, values JSON text. Fields: ``format`` (:data:`FORMAT`),
``config_digest`` / ``config_name`` / ``config`` (``Config.digest()``, name, full dict),
``modality``, ``class_names``, ``tasks``, ``head_keys``, ``grid`` (range, pillar size, stride,
BEV shape, cell size), ``input_names``, ``input_shape``, ``output_names``, ``output_shapes``,
``weights`` (checkpoint file + sha256, or random seed) and ``exporter`` (torch version, exporter,
opset).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from radardistill_ros.backends.base import INPUT_NAME, ModelMismatchError, input_shape
from radardistill_ros.config import DIGEST_SECTIONS, Config
from radardistill_ros.conventions import CLASS_NAMES, TASKS
from radardistill_ros.model.head import HEAD_KEYS, REG_CHANNELS, head_output_names

#: Version of the exported-model contract (I/O names, layout, metadata fields).
FORMAT = "radardistill_ros.dense_part/1"
PREFIX = "radardistill."


def grid_metadata(cfg: Config) -> dict[str, Any]:
    """The BEV grid of a config as plain JSON types."""
    g = cfg.grid
    return {"point_cloud_range": list(g.point_cloud_range), "pillar_size": list(g.pillar_size),
            "out_stride": g.out_stride, "bev_shape": list(g.bev_shape), "cell_size": list(g.cell_size)}


def output_shapes(cfg: Config, batch: int = 1) -> dict[str, list[int]]:
    """``{output name: [B, C, H, W]}`` of the head maps of a config."""
    h, w = cfg.grid.bev_shape
    shapes = {}
    for t, names in enumerate(TASKS):
        for key in HEAD_KEYS:
            c = len(names) if key == "hm" else REG_CHANNELS[key]
            shapes[f"task{t}.{key}"] = [batch, c, h, w]
    return shapes


def build_metadata(cfg: Config, weights: Mapping[str, Any], exporter: Mapping[str, Any],
                   modality: str = "radar") -> dict[str, Any]:
    """Metadata (decoded form) of the dense part of ``cfg`` exported from ``weights``."""
    return {
        "format": FORMAT,
        "config_digest": cfg.digest(),
        "config_name": cfg.name,
        "config": cfg.to_dict(),
        "modality": modality,
        "class_names": list(CLASS_NAMES),
        "tasks": [list(t) for t in TASKS],
        "head_keys": list(HEAD_KEYS),
        "grid": grid_metadata(cfg),
        "input_names": [INPUT_NAME],
        "input_shape": list(input_shape(cfg)),
        "output_names": head_output_names(TASKS),
        "output_shapes": output_shapes(cfg),
        "weights": dict(weights),
        "exporter": dict(exporter),
    }


def encode_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    """Decoded metadata -> ``{"radardistill.<field>": JSON text}`` (ONNX metadata_props)."""
    return {PREFIX + k: json.dumps(v, sort_keys=True) for k, v in meta.items()}


def decode_metadata(props: Mapping[str, str], source: str = "model") -> dict[str, Any]:
    """``metadata_props`` -> decoded metadata; ``ModelMismatchError`` if they are not ours."""
    meta = {}
    for k, v in props.items():
        if k.startswith(PREFIX):
            try:
                meta[k[len(PREFIX):]] = json.loads(v)
            except json.JSONDecodeError as e:
                raise ModelMismatchError(f"{source}: metadata {k} is not valid JSON: {e}") from None
    if "format" not in meta:
        raise ModelMismatchError(f"{source}: no {PREFIX}format metadata: not a dense part exported by "
                                 "radardistill_ros (export it with `python -m export.onnx`)")
    return meta


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def config_differences(stored: Mapping[str, Any], current: Mapping[str, Any], limit: int = 8) -> list[str]:
    """``["model.head.head_channels: 32 (model) != 64 (runtime)", ...]`` between two config dicts."""
    a, b = _flatten(stored), _flatten(current)
    diffs = [f"{k}: {a.get(k, '<absent>')!r} (model) != {b.get(k, '<absent>')!r} (runtime)"
             for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    return diffs[:limit] + ([f"... and {len(diffs) - limit} more"] if len(diffs) > limit else [])


def check_metadata(meta: Mapping[str, Any], cfg: Config, source: str = "model") -> None:
    """Refuse (``ModelMismatchError``) a model whose format, config digest, class names, task
    groups, grid or I/O do not match the runtime's ``cfg``; the message names both digests and the
    differing fields of the digested sections (grid, data, model: decoding settings may differ,
    decoding runs outside the engine)."""
    if meta.get("format") != FORMAT:
        raise ModelMismatchError(f"{source}: export format {meta.get('format')!r}, this runtime reads "
                                 f"{FORMAT!r}; re-export it with `python -m export.onnx`")
    stored, current = meta.get("config_digest"), cfg.digest()
    if stored != current:
        ours = cfg.to_dict()
        diffs = config_differences({k: meta["config"].get(k) for k in DIGEST_SECTIONS},
                                   {k: ours[k] for k in DIGEST_SECTIONS}) if "config" in meta else []
        raise ModelMismatchError(
            f"{source} was exported for config {meta.get('config_name')!r} (digest {str(stored)[:16]}), "
            f"but the runtime config is {cfg.name!r} (digest {current[:16]})"
            + (f"; differences: {'; '.join(diffs)}" if diffs else "")
            + ". Re-export from a checkpoint of the runtime config (python -m export.onnx) "
            "or run with the config the model was exported for.")
    expected = {"class_names": list(CLASS_NAMES), "tasks": [list(t) for t in TASKS],
                "head_keys": list(HEAD_KEYS), "grid": grid_metadata(cfg), "input_names": [INPUT_NAME],
                "input_shape": list(input_shape(cfg)), "output_names": head_output_names(TASKS)}
    for key, want in expected.items():
        if meta.get(key) != want:
            raise ModelMismatchError(f"{source}: metadata {key} = {meta.get(key)!r}, this runtime expects "
                                     f"{want!r} (config {cfg.name!r}, digest {current[:16]}); "
                                     "re-export the model")
