#!/usr/bin/env bash
# Installs what a job needs on a fresh Debian 12 or 13 machine, where only make and git are
# assumed: the job's Debian packages (scripts/deps/apt-<job>.txt, apt-get as root), then its
# Python packages (scripts/deps/pip-<job>.txt) into the checkout's one virtual environment,
# .venv/.  A venv because Debian's python3 is externally managed (PEP 668) and has no pip; the
# Makefile runs every Python target with .venv/bin/python.  Idempotent and quick when nothing
# changed (a stamp inside the venv, keyed by the requirement files' hash), so every make target
# can call it.
# Usage: scripts/install-deps.sh test|image
# Environment: PYTHON3 = the interpreter that creates the venv (default: python3 on PATH).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=$(dirname "$here")/.venv
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
    echo "run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 69
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

req="$here/deps/pip-$job.txt"
[ -f "$req" ] || exit 0
if ! "$venv/bin/python" -c '' 2>/dev/null; then  # missing, or its base interpreter is gone
  py=${PYTHON3:-python3}
  echo "install-deps: creating $venv with $(command -v "$py")"
  "$py" -m venv --clear "$venv"
fi
# The stamp's key covers the list and the lists it includes (-r FILE, relative to scripts/deps).
mapfile -t included < <(sed -nE 's/^\s*-r\s+(\S+).*/\1/p' "$req")
key=$(cd "$here/deps" && cat "pip-$job.txt" "${included[@]}" | sha256sum | cut -c1-16)
stamp="$venv/.coalmine-pip-$job.$key"
if [ ! -f "$stamp" ]; then
  echo "install-deps: installing Python packages from $req into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  rm -f "$venv/.coalmine-pip-$job".*
  touch "$stamp"
fi
