#!/usr/bin/env bash
# Installs the local servers the destination tests start. Idempotent; everything lands under .emulators/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .emulators

# Each store's installer (scripts/emulators/*.sh) is idempotent; run them all.
for installer in scripts/emulators/*.sh; do
  [ -e "$installer" ] || continue
  echo "== $installer"
  bash "$installer"
done
