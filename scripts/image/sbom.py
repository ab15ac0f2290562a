"""The image's software bill of materials (SPDX 2.3 JSON) and its SHA256SUMS.

Everything in it comes from the lock file and the build's own inputs (no clock, no host
names), so the SBOM is as reproducible as the image it describes: every Debian package with
name, version, architecture, SHA-256 and a purl, plus our own components.  Before it is
written, the root packages are checked against dpkg's own database of the root filesystem
(kept from before the package manager is stripped): an SBOM that lists what the lock asked for
but not what was really installed would be worse than none.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from debian import deb822

from firmware.shared.errors import InputError
from scripts.image.common import SUITE, sha256_file
from scripts.image.lock import Pin


def _spdx_id(text: str) -> str:
    return "SPDXRef-" + "".join(c if c.isalnum() or c in ".-" else "-" for c in text)


def debian_package(pin: Pin) -> dict[str, Any]:
    return {
        "SPDXID": _spdx_id(f"deb-{pin.name}" if pin.role != "build"
                           else f"build-tool-{pin.name}-{pin.arch}"),
        "name": pin.name,
        "versionInfo": pin.version,
        "supplier": "Organization: Debian",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "packageFileName": Path(pin.filename).name,
        "checksums": [{"algorithm": "SHA256", "checksumValue": pin.sha256}],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
            "referenceLocator": f"pkg:deb/debian/{pin.name}@{pin.version}"
                                f"?arch={pin.arch}&distro=debian-{SUITE}",
        }],
        "comment": {"root": "installed into the root filesystem",
                    "host": "unpacked on the build host; only selected files are in the image",
                    "build": "the pinned build environment: runs on the build host, none of it "
                             "is in the image"}[pin.role],
    }


def installed_packages(status: str) -> dict[str, tuple[str, str]]:
    """name -> (version, architecture) of every package dpkg's status file marks installed."""
    found: dict[str, tuple[str, str]] = {}
    for para in deb822.Deb822.iter_paragraphs(status.splitlines(keepends=True)):
        if para.get("Status") == "install ok installed" and "Package" in para:
            found[para["Package"]] = (para.get("Version", ""), para.get("Architecture", ""))
    return found


def check_installed(pins: list[Pin], installed: Mapping[str, tuple[str, str]]) -> None:
    """The lock's root packages are exactly what dpkg installed (name, version, architecture)."""
    wanted = {p.name: (p.version, p.arch) for p in pins if p.role == "root"}
    problems = [f"{name}: locked {wanted.get(name)}, installed {installed.get(name)}"
                for name in sorted(set(wanted) | set(installed))
                if wanted.get(name) != installed.get(name)]
    if problems:
        raise InputError("the root filesystem does not hold exactly the locked packages:\n  "
                         + "\n  ".join(problems[:40]),
                         hint="the SBOM would be wrong; rebuild with --no-stage-cache, "
                              "and run make lock if the lock is stale")


def own_component(name: str, version: str, digest: str, comment: str) -> dict[str, Any]:
    return {
        "SPDXID": _spdx_id(name), "name": name, "versionInfo": version,
        "supplier": "Organization: coalmine", "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False, "checksums": [{"algorithm": "SHA256", "checksumValue": digest}],
        "comment": comment,
    }


def tree_digest(root: Path, pattern: str = "*.py") -> str:
    """SHA-256 over (relative path, content hash) of every matching file, sorted."""
    h = hashlib.sha256()
    for path in sorted(root.rglob(pattern)):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        h.update(f"{path.relative_to(root)}\0{sha256_file(path)}\n".encode())
    return h.hexdigest()


def write_sbom(path: Path, *, board: str, version: str, sde: int, image: Path, image_sha256: str,
               pins: list[Pin], own: list[dict[str, Any]],
               installed: Mapping[str, tuple[str, str]], source: str = "") -> None:
    """SPDX 2.3 JSON; ``image_sha256`` is passed in (the image is large: hash it once).

    ``installed`` is dpkg's view of the root filesystem (:func:`installed_packages`); it must
    match the root packages of ``pins``.  ``source`` (commit, dirty state, lock and archive
    state) becomes the creation comment.
    """
    check_installed(pins, installed)
    image_pkg = own_component(f"coalmine-{board}-image", version, image_sha256,
                              f"the SD-card image {image.name}")
    ordered = sorted(pins, key=lambda p: (p.role, p.name))
    packages = [image_pkg, *own, *(debian_package(p) for p in ordered)]
    tools = {debian_package(p)["SPDXID"] for p in ordered if p.role == "build"}
    created = datetime.datetime.fromtimestamp(sde, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"coalmine-{board}-{version}",
        "documentNamespace": f"urn:coalmine:spdx:{board}:{image_sha256}",
        "creationInfo": {"created": created, "creators": ["Tool: coalmine scripts/image"],
                         "comment": source},
        "documentDescribes": [image_pkg["SPDXID"]],
        "packages": packages,
        "relationships": [
            {"spdxElementId": image_pkg["SPDXID"], "relationshipType": "CONTAINS",
             "relatedSpdxElement": p["SPDXID"]} for p in packages[1:]
            if p["SPDXID"] not in tools
        ] + [
            {"spdxElementId": p["SPDXID"], "relationshipType": "BUILD_TOOL_OF",
             "relatedSpdxElement": image_pkg["SPDXID"]} for p in packages
            if p["SPDXID"] in tools
        ],
    }
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def write_sums(out_dir: Path, names: list[str], known: Mapping[str, str] | None = None) -> Path:
    """SHA256SUMS in the format ``sha256sum -c`` reads; ``known`` digests are not recomputed."""
    known = known or {}
    path = out_dir / "SHA256SUMS"
    path.write_text("".join(f"{known.get(n) or sha256_file(out_dir / n)}  {n}\n"
                            for n in sorted(names)))
    return path
