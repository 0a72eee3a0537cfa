"""BEV and precision-recall plots (training.visualize)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from nuscenes.eval.detection.data_classes import DetectionMetricData, DetectionMetricDataList

from training.visualize import box_outline, plot_bev, plot_pr_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_box_outline_by_hand() -> None:
    """A 4 x 2 m box at (1, 2) heading +y (yaw 90 deg): corners and heading tick."""
    corners, tick = box_outline([1.0, 2.0, 0.0, 4.0, 2.0, 1.5, np.pi / 2])
    np.testing.assert_allclose(corners[0], [0.0, 4.0], atol=1e-12)       # front-left
    np.testing.assert_allclose(corners[1], [2.0, 4.0], atol=1e-12)       # front-right
    np.testing.assert_allclose(corners[2], [2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(corners[3], [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(corners[4], corners[0])
    np.testing.assert_allclose(tick, [[1.0, 2.0], [1.0, 4.0]], atol=1e-12)


def test_plot_bev_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    radar = np.column_stack([rng.uniform(-40, 40, (200, 2)), rng.uniform(0, 1, 200), rng.normal(5, 5, 200),
                             rng.normal(0, 3, (200, 2))]).astype(np.float32)
    lidar = np.column_stack([rng.uniform(-50, 50, (5000, 3)), rng.uniform(0, 1, (5000, 2))])
    gt = np.array([[10, 5, 1, 4.5, 2, 1.6, 0.3, 2, 0], [-20, -8, 1, 10, 2.5, 3, -1.2, 0, 0]], np.float32)
    labels = np.array([0, 1])
    det = gt + np.array([0.5, -0.3, 0, 0, 0, 0, 0.1, 0, 0], np.float32)
    path = plot_bev(tmp_path / "sub" / "bev.png", radar=radar, lidar=lidar, gt_boxes=gt, gt_labels=labels,
                    det_boxes=det, det_scores=np.array([0.9, 0.05]), det_labels=labels, score_threshold=0.1,
                    title="test")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    img = mpimg.imread(path)
    assert img.shape[0] > 500 and img.shape[1] > 500 and img[..., :3].std() > 0.01
    # nothing but the ego marker is fine too
    empty = plot_bev(tmp_path / "empty.png")
    assert empty.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("source", ["object", "file"])
def test_plot_pr_curves_from_metric_data(tmp_path: Path, source: str) -> None:
    md_list = DetectionMetricDataList()
    np.random.seed(0)  # noqa: NPY002 (DetectionMetricData.random_md draws from the legacy global RNG)
    for cls in ("car", "pedestrian"):
        for dist in (0.5, 1.0, 2.0, 4.0):
            md_list.set(cls, dist, DetectionMetricData.random_md())
    md_list.set("bus", 2.0, DetectionMetricData.no_predictions())
    arg = md_list
    if source == "file":
        import json

        arg = tmp_path / "metrics_details.json"
        arg.write_text(json.dumps(md_list.serialize()))
    paths = plot_pr_curves(arg, tmp_path / "pr")
    assert [p.name for p in paths] == ["pr_car.png", "pr_bus.png", "pr_pedestrian.png"]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5_000
    assert plot_pr_curves(arg, tmp_path / "one", classes=["car"])[0].name == "pr_car.png"
