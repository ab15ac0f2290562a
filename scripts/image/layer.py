"""Our layer on top of the Debian base: overlay, runtime, users, units, modules, hardening.

Runs on the build host in seconds (only a few commands of the image itself run through
qemu-user: the byte-compiler, systemd-sysusers and systemctl, so their versions match the
system that will use their output).  The DEBUG variant is the only place a login shell can
appear: a root shell on the serial console, never in the default image.
"""

from __future__ import annotations

from pathlib import Path

from firmware.protocol import trust
from scripts.image import kernel, rootfs
from scripts.image.common import REPO, board_config, stage

# The device boots into coalmine.target (overlay/), which wants exactly the canary's units; these
# two are enabled only for the helper units they bring (networkd's socket and wait-online).
ENABLE = ["systemd-networkd.service", "systemd-resolved.service"]
DEFAULT_TARGET = "coalmine.target"
# No login anywhere (console, serial, VTs, containers, logind), no first-boot prompts, no
# committing a machine-id to the read-only root, no emergency debug shell.
MASK_LOGIN = ["getty@.service", "serial-getty@.service", "autovt@.service",
              "console-getty.service", "container-getty@.service", "debug-shell.service",
              "systemd-logind.service", "systemd-user-sessions.service",
              "systemd-ask-password-console.path", "systemd-ask-password-wall.path"]
# Nothing an appliance with a read-only root, a RAM-only /var and no modprobe needs: first-boot
# and update helpers, journal flushing and catalogs, random seed and hwdb files (all would go to
# the tmpfs), module loading units (systemd-modules-load does it), API file systems nobody uses,
# local IPC services nobody calls, network units from the kernel command line.
MASK_UNNEEDED = [
    "systemd-firstboot.service", "systemd-machine-id-commit.service", "e2scrub_all.timer",
    "e2scrub_reap.service", "fstrim.timer", "ldconfig.service", "systemd-update-done.service",
    "systemd-hwdb-update.service", "systemd-journal-flush.service",
    "systemd-journal-catalog-update.service", "systemd-random-seed.service",
    "systemd-pstore.service", "modprobe@.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "proc-sys-fs-binfmt_misc.mount",
    "sys-fs-fuse-connections.mount", "sys-kernel-config.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "dev-hugepages.mount", "systemd-network-generator.service",
    "systemd-hostnamed.socket", "systemd-hostnamed.service", "systemd-initctl.socket",
    "systemd-initctl.service", "systemd-creds.socket", "systemd-sysext.socket",
]
MASK = MASK_LOGIN + MASK_UNNEEDED
TRUST_ROOT_PATH = Path("/usr/lib/coalmine/trust-root.json")
DEBUG_GETTY = """# DEBUG image only: a root shell on the serial console (never by default).
[Service]
ExecStart=
ExecStart=-/usr/sbin/agetty --noclear -n -l /bin/bash --keep-baud 115200 %I $TERM
"""


def pin_trust_root(root: Path, source: Path | None) -> None:
    """The first trust root from the signing ceremony, checked (its own root threshold) and
    pinned at /usr/lib/coalmine/trust-root.json; without one the image pins nothing and every
    update will be refused (fail closed)."""
    if source is None:
        stage("rootfs: no trust root pinned (updates will be refused)")
        return
    data = source.read_bytes()
    pinned = trust.first_root(data)  # a root that does not verify stops the build
    target = root / TRUST_ROOT_PATH.relative_to("/")
    target.write_bytes(data)
    target.chmod(0o644)
    stage(f"rootfs: trust root {pinned.version} pinned ({source})")


def apply(root: Path, *, board: str, debug: bool, k: kernel.Kernel, sde: int,
          build_info: str, trust_root: Path | None = None) -> None:
    stage("rootfs: overlay, device runtime, users, units")
    rootfs.add_overlay(root, REPO / "overlay")
    rootfs.add_runtime(root)
    pin_trust_root(root, trust_root)
    board_defaults = REPO / "board" / board / "device.toml"  # the button's line, the LED
    (root / "etc/coalmine/board.toml").write_bytes(board_defaults.read_bytes())
    (root / "etc/coalmine/board.toml").chmod(0o644)
    (root / "usr/lib/coalmine/BUILD").write_text(build_info)
    rootfs.chroot(root, "systemd-sysusers", "/usr/lib/sysusers.d/coalmine.conf")
    rootfs.chroot(root, "systemctl", "enable", *ENABLE)
    rootfs.chroot(root, "systemctl", "set-default", DEFAULT_TARGET)
    masks = list(MASK)
    console = str(board_config(board).get("serial_console", "ttyAMA0"))
    if debug:
        masks = [m for m in masks if m not in ("serial-getty@.service",)]
        drop = root / f"etc/systemd/system/serial-getty@{console}.service.d"
        drop.mkdir(parents=True, exist_ok=True)
        (drop / "coalmine-debug.conf").write_text(DEBUG_GETTY)
        rootfs.chroot(root, "systemctl", "add-wants", DEFAULT_TARGET,
                      f"serial-getty@{console}.service")
    rootfs.chroot(root, "systemctl", "mask", *masks)
    gens = root / "etc/systemd/system-generators"
    gens.mkdir(parents=True, exist_ok=True)
    # A PC tool (e.g. Raspberry Pi Imager) must not inject units through the command line.
    (gens / "systemd-run-generator").unlink(missing_ok=True)
    (gens / "systemd-run-generator").symlink_to("/dev/null")
    n = kernel.install_modules(k, board, root)
    stage(f"rootfs: {n} kernel modules for {board}")
    rootfs.strip(root)
    rootfs.identity(root)
    _clamp_shadow(root, sde)


def _clamp_shadow(root: Path, sde: int) -> None:
    """/etc/shadow's "last changed" day: pin it (tools fill in the build day otherwise)."""
    sde_day = str(sde // 86400)
    for name in ("etc/shadow", "etc/gshadow"):
        path = root / name
        if not path.is_file():
            continue
        lines = []
        for line in path.read_text().splitlines():
            f = line.split(":")
            if name == "etc/shadow" and len(f) > 2 and f[2]:
                f[2] = sde_day
            lines.append(":".join(f))
        mode = path.stat().st_mode
        path.write_text("\n".join(lines) + "\n")
        path.chmod(mode)
    for backup in ("etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-"):
        (root / backup).unlink(missing_ok=True)
