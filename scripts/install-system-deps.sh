#!/usr/bin/env bash
# Debian packages the build and the tests need; installs only what is missing (apt-get, as root or via sudo).
#   cmake, g++          build llama-server from source
#   wrk                 the load generator of benchmarks/gateway_overhead.py
#   curl                the demo's readiness check and request
#   python3-venv        virtual environments (present on most machines)
#   skopeo, umoci       container images: pack reads docker archives and daemons with skopeo; the tests
#                       check the OCI layouts they write with both
#   docker-registry     the CNCF distribution registry: the tests' public and internal registries
#   docker.io           dockerd: install --docker and airlock's own image, tested for real
#   docker-compose      deploy compose: 1.29 validates the rendered files and brings the CPU path up
#   mmdebstrap          a Debian root file system for `airlock image build` (no base image is pulled)
#   postgresql          the gateway's shared state (gateway.database), tested against a real server
#   chromium, chromium-driver  the operator console's browser test (headless, in a loopback-only namespace)
#   firefox-esr         the console's Firefox test, driven over Marionette (no geckodriver: not in Debian)
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v skopeo >/dev/null || need+=(skopeo)
command -v umoci >/dev/null || need+=(umoci)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v dockerd >/dev/null || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v unshare >/dev/null || need+=(util-linux)  # unshare, nsenter: daemons in a loopback-only namespace
command -v ip >/dev/null || need+=(iproute2)  # ip netns, veth: the Ray test's two hosts
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v firefox-esr >/dev/null || need+=(firefox-esr)
if ((${#need[@]})); then
  SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  echo "installed: ${need[*]}" >&2
fi
