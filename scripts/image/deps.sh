#!/usr/bin/env bash
# `make image-deps`: install the image build's host tools (scripts/deps/apt-image.txt) and its
# Python packages into .venv/ (scripts/deps/pip-image.txt), and make sure arm64 binaries run
# through qemu-user (binfmt_misc), which a container may not have set up.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/install-deps.sh" image
binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "image-deps: arm64 emulation is not enabled; run as root:" >&2
    echo "  mount -t binfmt_misc binfmt_misc $binfmt; update-binfmts --enable qemu-aarch64" >&2
    exit 69
  fi
  [ -e "$binfmt/register" ] || mount -t binfmt_misc binfmt_misc "$binfmt"
  # Debian 12: binfmt-support; Debian 13: qemu-user-binfmt's systemd-binfmt file
  update-binfmts --enable qemu-aarch64 2>/dev/null ||
    /usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf
fi
echo "image-deps: host tools and arm64 emulation ready"
