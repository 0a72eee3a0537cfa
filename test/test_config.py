"""Strict configuration loading: every error names its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from radardistill_ros.config import CONFIG_DIR, ConfigError, config_from_dict, load_config


def paper_dict() -> dict:
    return yaml.safe_load((CONFIG_DIR / "paper.yaml").read_text())


def test_shipped_variants_load_and_have_the_published_grid() -> None:
    cfg = load_config("paper")
    assert cfg.grid.pillar_grid == (1440, 1440)
    assert cfg.grid.bev_shape == (180, 180)
    assert cfg.grid.cell_size == pytest.approx((0.6, 0.6))
    assert cfg.data.radar_sweeps == 6 and cfg.data.lidar_sweeps == 10
    assert cfg.post.nms_iou_threshold == 0.2 and cfg.post.nms_post_max == 83
    assert cfg.loss.gamma == 5.0 and cfg.loss.delta == 25.0
    for f in CONFIG_DIR.glob("*.yaml"):
        assert load_config(f).name == f.stem


def test_round_trip_and_digest_is_stable() -> None:
    cfg = load_config("paper")
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and again.digest() == cfg.digest()
    d = cfg.to_dict()
    d["model"]["head"]["head_channels"] = 32
    assert config_from_dict(d).digest() != cfg.digest()
    # post-processing and the training recipe do not touch the weights: same digest
    d = cfg.to_dict()
    d["post"]["score_threshold"] = 0.3
    d["post"]["peak_kernel"] = 0
    d["train"]["lr"] = 0.5
    assert config_from_dict(d).digest() == cfg.digest()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("model", "cma", "chanels"), 3, "model.cma.chanels: unknown key"),
        (("model", "cma", "channels"), "256", "model.cma.channels: expected int, got str"),
        (("grid", "out_stride"), 8.0, "grid.out_stride: expected int, got float"),
        (("data", "radar_sweeps"), True, "data.radar_sweeps: expected int, got bool"),
        (("grid", "pillar_size"), [0.075], "grid.pillar_size: expected a list of 2 values, got 1"),
        (("grid", "pillar_size"), [0.07, 0.07], "grid.pillar_size: axis 0"),
        (("model", "sparse_backend"), "cuda", "model.sparse_backend: expected auto|torch|spconv"),
        (("data", "radar_channels"), ["RADAR_TOP"], "data.radar_channels: unknown channels"),
        (("post", "iou_rectifier"), 1.5, "post.iou_rectifier: must be in [0, 1]"),
    ],
)
def test_bad_values_name_the_key(path: tuple[str, ...], value: object, message: str) -> None:
    d = paper_dict()
    node = d
    for k in path[:-1]:
        node = node.setdefault(k, {})
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(d)


def test_missing_key_is_named() -> None:
    d = paper_dict()
    del d["model"]["head"]["head_channels"]
    with pytest.raises(ConfigError, match=r"model\.head\.head_channels: missing required key"):
        config_from_dict(d)


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping at top level"):
        load_config(scalar)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="shipped variants"):
        load_config("no_such_variant")
