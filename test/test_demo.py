"""The demo path (``make demo``) at reduced size, and the shipped default model against its card."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _node_helpers import ROOT, make_checkpoint, write_params

from radardistill_ros.tools import demo

MODELS = ROOT / "radardistill_ros" / "models"
SHIPPED = MODELS / "lite_demo.pt"


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmd and state != "Z":
            found.append(f"{pid}: {cmd}")
    return found


def test_demo_end_to_end_tiny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """World (2 scenes x 1.5 s, one bag each) -> bags -> ONNX export -> node process ->
    replay/record process -> latency + official mAP -> PNGs; no process is left afterwards."""
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    params = write_params(tmp_path / "params.yaml", model_config="", tf_timeout=0.2)
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--scenes", "2", "--scene-seconds", "1.5", "--seed", "5",
                    "--backend", "onnxruntime", "--model", str(ckpt), "--params-file", str(params),
                    "--bev-frames", "2", "--print-frames", "8", "--bev-score", "0.0",
                    "--domain-id", os.environ["ROS_DOMAIN_ID"]])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "p50" in text and "p95" in text and "p99" in text
    assert "frames sent" in text and "answered" in text
    assert "mAP:" in text and "NDS:" in text and "car" in text
    assert "pictures (" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_sent"] > 0
    assert summary["frames_answered"] >= 1
    assert summary["latency_ms"]["count"] == summary["frames_answered"]
    assert 0.0 <= summary["mean_ap"] <= 1.0 and 0.0 <= summary["nd_score"] <= 1.0
    assert set(summary["per_class_ap"]) >= {"car", "pedestrian", "barrier"}
    pics = out / "pictures"
    assert (pics / "latency_histogram.png").stat().st_size > 1000
    assert len(list((pics / "bev").glob("bev_*.png"))) >= 1
    assert (pics / "pr" / "pr_car.png").is_file()
    assert all(Path(p).is_file() for p in summary["pictures"])
    assert (out / "tiny.onnx").is_file()
    assert not _processes_mentioning(str(tmp_path)), "the demo left processes running"


def test_demo_stops_processes_when_the_node_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A node that cannot start (model/config digest mismatch) -> clear error, exit 1, nothing left."""
    ckpt = make_checkpoint(tmp_path / "tiny.pt")
    params = write_params(tmp_path / "params.yaml", model_config="paper")
    rc = demo.main(["--out", str(tmp_path / "demo"), "--scenes", "1", "--scene-seconds", "1",
                    "--backend", "torch", "--model", str(ckpt), "--params-file", str(params),
                    "--node-timeout", "60", "--domain-id", os.environ["ROS_DOMAIN_ID"]])
    err = capsys.readouterr().err
    assert rc == 1
    assert "step 'replay' failed" in err and "node" in err
    assert not _processes_mentioning(str(tmp_path)), "the demo left processes running"


def test_demo_missing_model_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = demo.main(["--out", str(tmp_path / "demo"), "--model", str(tmp_path / "nope.pt")])
    assert rc == 1
    assert "nope.pt not found" in capsys.readouterr().err


def test_demo_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--scenes", "0"]) == 2
    assert demo.main(["--rate", "0"]) == 2
    capsys.readouterr()


def test_frames_table_formatting() -> None:
    publishes = [("/radar/front/points", 1_000_000_000 + i * 76_000_000, 100.0 + i * 0.076) for i in range(5)]
    import numpy as np

    frames = {publishes[i][1]: (publishes[i][2] + 0.02, np.zeros((3, 9)), np.array([0.5, 0.2, 0.1]),
                                np.zeros(3, np.int64)) for i in (0, 2, 4)}
    stages = {publishes[0][1]: {"points": 812.0, "receive_to_publish": 15.0}}
    rows = demo._frames_table(publishes, frames, stages, {publishes[2][1]})
    assert [r["detections"] for r in rows] == [3, None, 3, None, 3]
    assert rows[0]["points"] == 812 and rows[0]["detections_0.3"] == 1
    assert rows[0]["latency_ms"] == pytest.approx(20.0, abs=1e-6)
    text = demo._format_frames(rows, 0)
    assert text.count("not answered") == 2 and "812" in text
    assert "3 of 5 trigger frames shown" in demo._format_frames(rows, 3)


def test_shipped_model_matches_its_card() -> None:
    """radardistill_ros/models/lite_demo.pt loads with its config and matches MODEL_CARD.md and
    lite_demo.json (config digest, sha256, parameter count); produced by ``make train-demo``."""
    from radardistill_ros.config import load_config
    from radardistill_ros.model import load_checkpoint
    from radardistill_ros.pipeline import file_sha256

    assert SHIPPED.is_file(), f"{SHIPPED} is missing: run `make train-demo` and commit the model"
    facts = json.loads((MODELS / "lite_demo.json").read_text())
    card = (MODELS / "MODEL_CARD.md").read_text()
    cfg = load_config(facts["config"])
    assert cfg.name == "lite"
    model, loaded_cfg = load_checkpoint(SHIPPED, cfg=cfg, modality="radar")
    assert loaded_cfg.digest() == cfg.digest() == facts["config_digest"]
    assert file_sha256(SHIPPED) == facts["sha256"]
    assert SHIPPED.stat().st_size == facts["bytes"] < 8 * 2**20
    assert sum(p.numel() for p in model.parameters()) == facts["parameters"]
    assert facts["sha256"] in card and facts["config_digest"] in card
    assert f"{facts['parameters']:,}" in card
    assert facts["command"].startswith("python -m training.train_demo") and facts["command"] in card
    student = facts["metrics"]["student"]
    assert 0.0 <= student["mean_ap"] <= 1.0 and 0.0 <= student["nd_score"] <= 1.0
    assert f"{student['mean_ap']:.4f}" in card
    assert facts["data"]["seed"] != demo.DEMO_SEED, "the demo must run on a held-out world"
