#!/usr/bin/env bash
# Installs Azurite, Microsoft's Azure Storage emulator, from npm into
# .tools/azurite at the repository root, for the Azure Blob Storage tests.
#
# Safe to run again: it skips npm when the pinned version is installed.
set -euo pipefail

version=3.37.0
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=$repo/.tools/azurite
binary=$prefix/node_modules/.bin/azurite-blob

die() {
    echo "install-azurite: error: $*" >&2
    exit 1
}

command -v npm >/dev/null || die "npm is missing: install Node.js 20 or later with npm"

if [[ -x $binary && -f $prefix/version && $(cat "$prefix/version") == "$version" ]]; then
    echo "install-azurite: azurite $version is installed in .tools/azurite"
    exit 0
fi

mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$version" ||
    die "npm install azurite@$version failed: rerun it to see why"
echo "$version" >"$prefix/version"
echo "install-azurite: installed azurite $version into .tools/azurite"
