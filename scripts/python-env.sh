#!/usr/bin/env bash
# Creates .venv at the repository root and installs scripts/requirements.txt,
# then installs Azurite into .tools/azurite (scripts/install-azurite.sh),
# which the Blob Storage tests run beside the Python stand-ins.
#
# Safe to run again: it skips pip when .venv/requirements.sha256 matches the
# hash of the requirements and the venv's Python version.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$repo/.venv
requirements=$repo/scripts/requirements.txt
stamp=$venv/requirements.sha256

die() {
    echo "python-env: error: $*" >&2
    exit 1
}

command -v python3 >/dev/null || die "python3 is missing: run scripts/ensure-services.sh"

# A venv whose interpreter is gone, for example after a Python upgrade, is
# rebuilt from scratch.
if [[ -d $venv ]] && ! "$venv/bin/python" -c '' 2>/dev/null; then
    rm -rf "$venv"
fi
if [[ ! -d $venv ]]; then
    python3 -m venv "$venv" ||
        die "python3 -m venv $venv failed: on Debian install python3-venv (scripts/ensure-services.sh does)"
fi

"$repo/scripts/install-azurite.sh"

wanted=$( (cat "$requirements"; "$venv/bin/python" --version) | sha256sum | cut -d ' ' -f 1)
if [[ -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
    echo "python-env: .venv up to date"
    exit 0
fi

PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install --quiet -r "$requirements" ||
    die "pip install -r scripts/requirements.txt failed: rerun it without --quiet to see why"
echo "$wanted" >"$stamp"
echo "python-env: installed scripts/requirements.txt into .venv"
