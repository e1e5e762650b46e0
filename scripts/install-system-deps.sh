#!/usr/bin/env bash
# Debian packages the build and the tests need; installs only what is missing (apt-get, as root or via sudo).
#   cmake, g++          build llama-server from source
#   wrk                 the load generator of benchmarks/gateway_overhead.py
#   curl                the demo's readiness check and request
#   python3-venv        virtual environments (present on most machines)
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  echo "installed: ${need[*]}" >&2
fi
