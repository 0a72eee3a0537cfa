"""Model package: pillars, VFE, sparse encoder, CMA, DenseEnc, CenterHead, the full detector.

Imports go down only: detector -> (head, dense_enc, cma -> dcn, backbone -> sparse, vfe, pillars).
"""

from radardistill_ros.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from radardistill_ros.model.detector import (
    DenseFeatures,
    DensePart,
    DetectorOutput,
    FlatDensePart,
    PillarFrontEnd,
    PillarNetDetector,
    build_model,
)
from radardistill_ros.model.head import HEAD_KEYS, flatten_head, head_output_names, unflatten_head

__all__ = [
    "HEAD_KEYS", "CheckpointError", "DenseFeatures", "DensePart", "DetectorOutput", "FlatDensePart",
    "PillarFrontEnd", "PillarNetDetector", "build_model", "flatten_head", "head_output_names",
    "load_checkpoint", "save_checkpoint", "unflatten_head",
]
