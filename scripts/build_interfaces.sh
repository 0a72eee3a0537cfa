#!/usr/bin/env bash
# Build the message packages kept in interfaces/ (vision_msgs, tf2_msgs) into the venv prefix,
# with the ROS 2 Jazzy wheels' own rosidl toolchain. Idempotent: a package is rebuilt only when
# its definitions, the Python or the numpy major version changed (stamp file).
#
# Usage: scripts/build_interfaces.sh VENV_DIR
set -euo pipefail
VENV=$(cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY="$VENV/bin/python"
BUILD="$ROOT/build/interfaces"

py_inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$PY" -c 'import numpy; print(numpy.get_include())')
np_ver=$("$PY" -c 'import numpy; print(numpy.__version__)')

# The wheels' exported CMake files hard-code the include dirs of the interpreter that built them
# (a manylinux /opt/python/cp3xx-cp3xx tree, numpy 2's numpy/_core/include). Point them at this
# venv's Python and numpy include dirs (platform.md, "ROS 2").
{ grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$VENV/share" --include='*.cmake' 2>/dev/null || true; } | while read -r f; do
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_?core/include#${np_inc}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g" "$f"
done

export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"
export PATH="$VENV/bin:$PATH"

for pkg in vision_msgs tf2_msgs; do
  src="$ROOT/interfaces/$pkg"
  stamp="$VENV/share/$pkg/.radardistill_build_stamp"
  want=$( (cd "$src" && cat CMakeLists.txt package.xml msg/*.msg; echo "$py_inc $np_inc $np_ver") | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import $pkg.msg" 2>/dev/null; then
    echo "[interfaces] $pkg up to date"
    continue
  fi
  echo "[interfaces] building $pkg"
  rm -rf "$BUILD/$pkg"
  mkdir -p "$BUILD/$pkg"
  cmake -S "$src" -B "$BUILD/$pkg" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_BUILD_TYPE=Release \
    -DPython3_EXECUTABLE="$PY" -DPYTHON_EXECUTABLE="$PY" -DBUILD_TESTING=OFF \
    > "$BUILD/$pkg.configure.log" 2>&1 || { tail -40 "$BUILD/$pkg.configure.log"; exit 1; }
  cmake --build "$BUILD/$pkg" -j "$(nproc)" > "$BUILD/$pkg.build.log" 2>&1 || { tail -40 "$BUILD/$pkg.build.log"; exit 1; }
  cmake --install "$BUILD/$pkg" > "$BUILD/$pkg.install.log" 2>&1 || { tail -40 "$BUILD/$pkg.install.log"; exit 1; }
  "$PY" -c "import $pkg.msg" || { echo "[interfaces] $pkg built but does not import"; exit 1; }
  echo "$want" > "$stamp"
done
