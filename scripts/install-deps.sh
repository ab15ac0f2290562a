#!/usr/bin/env bash
# Installs what a job needs on a fresh Debian machine: Debian packages (as root) and Python
# packages.  Idempotent and quick when everything is present, so `make test` can call it always.
# Usage: scripts/install-deps.sh test|image
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
job=${1:-test}
list="$here/deps/apt-$job.txt"
[ -f "$list" ] || { echo "install-deps: no package list $list" >&2; exit 64; }

mapfile -t pkgs < <(grep -vE '^\s*(#|$)' "$list")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing Debian packages: ${missing[*]}" >&2
    echo "run: sudo apt-get install -y ${missing[*]}" >&2
    exit 69
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

py=${PYTHON:-python3}
req="$here/deps/pip-$job.txt"
if [ -f "$req" ]; then
  stamp="${XDG_CACHE_HOME:-$HOME/.cache}/coalmine/pip-$job.$(sha256sum "$req" | cut -c1-16)"
  if [ ! -f "$stamp" ] || ! "$py" -c 'import nacl, dns' 2>/dev/null; then
    echo "install-deps: installing Python packages from $req"
    "$py" -m pip install -q --disable-pip-version-check -r "$req"
    mkdir -p "$(dirname "$stamp")" && touch "$stamp"
  fi
fi
