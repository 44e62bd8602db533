#!/usr/bin/env bash
# Chromium and its WebDriver: the log explorer's browser test (bifrost_pipeline_tests/logserver/) drives
# Debian's `chromium` through `chromium-driver` with selenium. Playwright's own browser download is not
# used (it cannot be reached from CI). Idempotent: installs the packages only when a binary is missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "chromium ready: $(chromium --version 2>/dev/null | head -1)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium.sh: chromium or chromedriver is missing and apt-get is not available: install Chromium and its driver (BIFROST_CHROMIUM, BIFROST_CHROMEDRIVER point the test at them)" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
# `apt-get update` only when the package lists are empty (a fresh image) or do not know the package.
if ! apt-cache show chromium-driver >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
echo "chromium ready: $(chromium --version 2>/dev/null | head -1)"
