#!/usr/bin/env bash
# Installs the local servers the destination tests start. Idempotent; everything lands under .emulators/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .emulators
