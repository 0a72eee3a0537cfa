"""colcon-style install of the ament_python package: files land where ament expects them."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "radardistill_ros"


def declared_console_scripts() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "console_scripts":
                    return [e.value.split("=")[0].strip() for e in v.elts]
    return []


def test_package_xml_is_format3_ament_python_with_runtime_deps() -> None:
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.attrib["format"] == "3"
    assert root.findtext("name") == PKG
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")} | {e.text for e in root.findall("depend")}
    for dep in ("rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "visualization_msgs",
                "diagnostic_msgs", "vision_msgs", "tf2_msgs"):
        assert dep in deps, dep
    assert (ROOT / "resource" / PKG).is_file()


def test_setup_install_layout(tmp_path: Path) -> None:
    """What colcon's ament_python build runs: setup.py build + install into a prefix."""
    prefix = tmp_path / "install"
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build", "--build-base", str(tmp_path / "build"),
         "install", "--prefix", str(prefix), "--record", str(tmp_path / "install.log"),
         "--single-version-externally-managed"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    share = prefix / "share" / PKG
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PKG).is_file()
    assert (share / "package.xml").read_text() == (ROOT / "package.xml").read_text()
    launch_files = sorted(p.name for p in (ROOT / "launch").glob("*.launch.py"))
    assert "detector.launch.py" in launch_files
    for name in launch_files:
        assert (share / "launch" / name).is_file(), name
    for cfg in (ROOT / "config").glob("*.yaml"):
        assert (share / "config" / cfg.name).is_file(), cfg.name
    rviz = sorted((ROOT / "config" / "rviz").glob("*.rviz"))
    assert rviz, "no RViz config in config/rviz"
    for f in rviz:
        assert (share / "config" / "rviz" / f.name).is_file(), f.name
    site = next(prefix.glob("lib/python3*/site-packages"))
    assert (site / PKG / "__init__.py").is_file()
    assert (site / PKG / "configs" / "paper.yaml").is_file()  # model variants travel as package data
    for f in ("lite_demo.pt", "lite_demo.json", "MODEL_CARD.md"):  # the shipped default model
        assert (site / PKG / "models" / f).is_file(), f
    assert (site / "training" / "__init__.py").is_file()
    assert (site / "export" / "__init__.py").is_file()
    for script in declared_console_scripts():
        exe = prefix / "lib" / PKG / script
        assert exe.is_file(), f"console script {script} not installed under lib/{PKG}"
        assert re.match(r"#!.*python", exe.read_text().splitlines()[0])


def test_launch_file_is_thin_and_declares_its_arguments() -> None:
    """ros2launch is not installable here: check the launch file statically."""
    src = (ROOT / "launch" / "detector.launch.py").read_text()
    tree = ast.parse(src)
    declared = {c.args[0].value for c in ast.walk(tree)
                if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    assert declared == {"config", "namespace", "model_path", "backend", "use_sim_time"}
    calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "Node"]
    assert len(calls) == 1
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    kw = {k.arg: k.value for k in calls[0].keywords}
    assert consts.get(getattr(kw["package"], "id", None), getattr(kw["package"], "value", None)) == PKG
    executable = kw["executable"].value
    assert executable in declared_console_scripts(), executable
    assert "generate_launch_description" in {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
