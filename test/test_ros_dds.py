"""Real DDS on loopback: two rclpy processes exchange PointCloud2 and Detection3DArray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PEER = Path(__file__).with_name("dds_peer.py")


def test_two_processes_exchange_cloud_and_detections(tmp_path: Path) -> None:
    dds_peer = pytest.importorskip("dds_peer", reason="test helper dds_peer.py not importable")
    out = tmp_path / "received.json"
    env = dict(os.environ)
    sub = subprocess.Popen([sys.executable, str(PEER), "sub", "--out", str(out), "--seconds", "30"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pub = subprocess.Popen([sys.executable, str(PEER), "pub", "--seconds", "35"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        sub_out, _ = sub.communicate(timeout=60)
        pub_out, _ = pub.communicate(timeout=60)
    finally:
        for p in (sub, pub):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sub.returncode == 0, sub_out.decode(errors="replace")
    assert pub.returncode == 0, pub_out.decode(errors="replace")
    got = json.loads(out.read_text())
    want = {k: dds_peer.to_plain(v) for k, v in dds_peer.make_messages().items()}
    # field by field, with a readable failure for the first difference
    for kind in ("cloud", "detections"):
        assert got[kind].keys() == want[kind].keys()
        for field in want[kind]:
            w = json.loads(json.dumps(want[kind][field]))  # same float/int normalisation as JSON
            assert got[kind][field] == w, f"{kind}.{field} differs"
    assert got["detections"]["detections"][1]["results"][0]["hypothesis"]["class_id"] == "pedestrian"
    assert got["cloud"]["data"] == list(range(39))
