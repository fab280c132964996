#!/usr/bin/env bash
# Debian packages sync-scorer needs: ffmpeg (media decode/encode), espeak-ng (synthetic speech and
# its phoneme events), libGL/glib (OpenCV inside mediapipe), Java 17 + Maven (the local Kafka broker),
# python3-venv (the Makefile's venv) and curl (a Go toolchain for building helm, when none is here).
# Installs only what is missing, so a warm machine pays nothing.
set -euo pipefail
need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
ldconfig -p 2>/dev/null | grep -q 'libespeak-ng.so.1' || need+=(libespeak-ng1)
ldconfig -p 2>/dev/null | grep -q 'libGL.so.1' || need+=(libgl1)
ldconfig -p 2>/dev/null | grep -q 'libglib-2.0.so.0' || need+=(libglib2.0-0)
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
# `python3 -m venv` needs ensurepip, which Debian ships apart from python3 itself
"${PYTHON:-python3}" -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# curl: scripts/install_go.sh fetches Go from the Go module proxy when none is installed
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "installing Debian packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
