#!/usr/bin/env bash
# Azurite (the Azure Storage emulator the object-store tests start) from npm, into .emulators/azurite.
# Local install only (no `npm -g`); idempotent: skips npm when azurite-blob is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=.emulators/azurite
VERSION="${AZURITE_VERSION:-3}"

if [ -x "$DIR/node_modules/.bin/azurite-blob" ]; then
  echo "azurite ready: $("$DIR/node_modules/.bin/azurite-blob" --version 2>/dev/null || echo installed)"
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "azurite.sh: npm not found (install Node.js >= 18)" >&2; exit 1; }
mkdir -p "$DIR"
[ -f "$DIR/package.json" ] || echo '{"name": "bifrost-emulators-azurite", "private": true}' > "$DIR/package.json"
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "azurite@$VERSION"
echo "azurite ready: $("$DIR/node_modules/.bin/azurite-blob" --version 2>/dev/null || echo installed)"
