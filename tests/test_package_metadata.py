"""Debian package metadata is read with python-debian, continuation lines and relations included."""

from __future__ import annotations

from scripts.image.lock import _kernel_packages
from scripts.image.sbom import installed_packages


def test_installed_packages_reads_dpkg_status_with_multiline_fields() -> None:
    status = ("Package: a\nStatus: install ok installed\nVersion: 1:2.3-4\nArchitecture: arm64\n"
              "Description: one\n Version: 9 (a continuation line, not a field)\n\n"
              "Package: b\nStatus: deinstall ok config-files\nVersion: 2\nArchitecture: all\n")
    assert installed_packages(status) == {"a": ("1:2.3-4", "arm64")}


def test_a_kernel_metapackage_names_its_versioned_kernel() -> None:
    fields = {"Depends": "linux-image-6.12.48+deb13-arm64 (= 6.12.48-1), "
                         "linux-image-6.12.49+deb13-arm64-unsigned | foo, kmod"}
    assert _kernel_packages(fields) == ["linux-image-6.12.48+deb13-arm64",
                                        "linux-image-6.12.49+deb13-arm64-unsigned"]
