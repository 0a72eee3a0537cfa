"""CenterPoint targets: a hand-computed single box, radius, task routing, limits."""

from __future__ import annotations

import numpy as np
import pytest

from radardistill_ros.config import GridConfig, TargetConfig, load_config
from radardistill_ros.conventions import CLASS_NAMES, TASKS
from training.targets import build_targets, draw_gaussian, gaussian_2d, gaussian_radius

GRID: GridConfig = load_config("paper").grid  # +-54 m, 0.6 m cells, 180 x 180
CFG = TargetConfig()


def test_single_car_by_hand() -> None:
    assert GRID.bev_shape == (180, 180) and GRID.cell_size == pytest.approx((0.6, 0.6))
    box = np.array([[1.0, -2.0, 0.9, 4.5, 1.9, 1.6, 0.5, 3.0, -1.0]])
    t = build_targets(box, np.array([CLASS_NAMES.index("car")]), GRID, CFG)
    assert len(t) == len(TASKS)
    car = t[0]
    # cx = (1 + 54) / 0.6 = 91.667 -> ix 91; cy = (-2 + 54) / 0.6 = 86.667 -> iy 86
    ix, iy = 91, 86
    assert car["heatmap"].shape == (1, 180, 180) and car["heatmap"].dtype == np.float32
    assert car["heatmap"][0, iy, ix] == 1.0
    assert np.unravel_index(np.argmax(car["heatmap"][0]), (180, 180)) == (iy, ix)
    assert car["ind"][0] == iy * 180 + ix == 15571
    assert car["mask"][0] and car["mask"].sum() == 1 and car["cls"][0] == 0
    expected_reg = [55 / 0.6 - 91, 52 / 0.6 - 86, 0.9, np.log(4.5), np.log(1.9), np.log(1.6),
                    np.cos(0.5), np.sin(0.5), 3.0, -1.0]
    np.testing.assert_allclose(car["reg"][0], expected_reg, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(car["boxes"][0], box[0], rtol=1e-6)
    # radius by hand: l = 7.5 cells, w = 3.167 cells, overlap 0.1: r1 = 8.3, r2 = 16.0, r3 = 2.05 -> 2
    assert gaussian_radius(4.5 / 0.6, 1.9 / 0.6, 0.1) == pytest.approx(2.046, abs=1e-3)
    r = 2
    sigma = (2 * r + 1) / 6
    assert car["heatmap"][0, iy, ix + 1] == pytest.approx(np.exp(-1 / (2 * sigma**2)), rel=1e-6)
    assert car["heatmap"][0, iy + 1, ix + 1] == pytest.approx(np.exp(-2 / (2 * sigma**2)), rel=1e-6)
    assert car["heatmap"][0, iy, ix + r + 1] == 0.0  # outside the (2r+1)^2 window
    for other in t[1:]:
        assert other["heatmap"].max() == 0.0 and not other["mask"].any()


def test_gaussian_radius_matches_closed_form_and_min_radius() -> None:
    # large box: the min over r1, r2, r3
    h, w, o = 20.0, 10.0, 0.1
    r1 = ((h + w) + np.sqrt((h + w) ** 2 - 4 * w * h * (1 - o) / (1 + o))) / 2
    r2 = (2 * (h + w) + np.sqrt(4 * (h + w) ** 2 - 16 * (1 - o) * w * h)) / 2
    r3 = (-2 * o * (h + w) + np.sqrt(4 * o**2 * (h + w) ** 2 - 16 * o * (o - 1) * w * h)) / 2
    assert gaussian_radius(h, w, o) == pytest.approx(min(r1, r2, r3))
    # a traffic cone (0.4 m) still gets radius 2
    t = build_targets(np.array([[0.0, 0.0, 0.5, 0.4, 0.4, 1.0, 0.0, 0.0, 0.0]]),
                      np.array([CLASS_NAMES.index("traffic_cone")]), GRID, CFG)
    hm = t[5]["heatmap"][1]
    assert hm.max() == 1.0 and (hm > 0).sum() == 25  # (2 * 2 + 1)^2 cells
    assert t[5]["cls"][0] == 1


def test_draw_gaussian_clips_at_border_and_takes_max() -> None:
    hm = np.zeros((6, 6), np.float32)
    draw_gaussian(hm, (0.2, 5.9), 2)
    np.testing.assert_allclose(hm[3:, :3], gaussian_2d(2)[:3, 2:], rtol=1e-6)
    before = hm.copy()
    draw_gaussian(hm, (0.2, 5.9), 2, k=0.5)  # lower values never overwrite
    np.testing.assert_array_equal(hm, before)


def test_tasks_max_objects_and_out_of_grid() -> None:
    labels = np.array([CLASS_NAMES.index(n) for n in ("bus", "trailer", "car", "car")])
    boxes = np.zeros((4, 9))
    boxes[:, 3:6] = [3.0, 2.0, 1.5]
    boxes[:, 0] = [0.0, 10.0, 60.0, -5.0]  # the third is outside +-54 m
    t = build_targets(boxes, labels, GRID, TargetConfig(max_objects=1))
    assert t[2]["mask"].tolist() == [True] and t[2]["cls"].tolist() == [0]  # only the bus fits
    assert t[2]["heatmap"][1].max() == 0.0
    assert t[0]["mask"].sum() == 1 and t[0]["boxes"][0, 0] == -5.0
    assert build_targets(np.zeros((0, 9)), np.zeros(0, np.int64), GRID, CFG)[0]["reg"].shape == (500, 10)
