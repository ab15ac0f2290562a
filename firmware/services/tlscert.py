"""The TLS honeypots' self-signed certificates, made by a root oneshot before the service runs.

A NAS or a router answers HTTPS with the certificate it made for itself on first boot, and an
intruder reads its subject (``openssl s_client``, a browser warning, a scanner) before anything
else.  So the subject is a setting (``[services.https] cert_subject``) and the certificate looks
like such a device's own (:data:`DEVICE`): RSA 2048, SHA-256, a random 159-bit serial, valid
from the day before it was made for ten years, the common name also as a DNS subjectAltName.
Windows' Remote Desktop makes its own the same way but differently (:data:`WINDOWS_RDP`): the
host name as the only subject, a 128-bit serial, six months of validity (Windows renews it
itself, so it is made again once less than a month is left), key and data encipherment and
server authentication, no other extension.  Key and certificate are one PEM file, written whole
or not at all (mode 0640, the service's group), so they can never disagree.  The honeypot only
reads it (it has no writable storage); this module, run by ``--make-host-key`` as root, keeps a
valid file whose subject is the configured one and makes a new one when the subject changed,
the certificate expired (or is about to) or the file cannot be read.
"""

from __future__ import annotations

import datetime
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.shared.atomic import write_atomic
from firmware.shared.errors import StorageError
from firmware.shared.ownership import group_id, own

log = logging.getLogger(__name__)

VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class Profile:
    """What kind of machine made the certificate for itself."""

    validity: datetime.timedelta
    renew: datetime.timedelta  # made again once less than this is left
    windows: bool  # Windows' own extensions (and serial), else a Linux device's


DEVICE = Profile(validity=VALIDITY, renew=datetime.timedelta(0), windows=False)
WINDOWS_RDP = Profile(validity=datetime.timedelta(days=182), renew=datetime.timedelta(days=30),
                      windows=True)
_OIDS = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME,
         "OU": NameOID.ORGANIZATIONAL_UNIT_NAME, "L": NameOID.LOCALITY_NAME,
         "ST": NameOID.STATE_OR_PROVINCE_NAME, "C": NameOID.COUNTRY_NAME}


def subject_name(subject: Sequence[tuple[str, str]]) -> x509.Name:
    """The X.509 name of ``(attribute, value)`` pairs (config.SUBJECT_ATTRIBUTES)."""
    return x509.Name([x509.NameAttribute(_OIDS[key], value) for key, value in subject])


def make_certificate(path: Path, subject: Sequence[tuple[str, str]], group: str | None = None,
                     *, now: datetime.datetime | None = None, profile: Profile = DEVICE
                     ) -> tuple[x509.Certificate, str]:
    """Keep or (re)make the certificate at ``path``; returns it and what was done.

    With ``group`` (the service's group; needs root) the directory is 2750 and the file 0640,
    both owned by root and that group, as for the SSH host key.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    name = subject_name(subject)
    gid = group_id(group) if group is not None else None
    if gid is not None:
        own(path.parent, gid, 0o2750, directory=True)
    cert, why = _existing(path, name, now + profile.renew)
    if cert is None:
        cert, pem = _self_signed(name, now, profile)
        write_atomic(path, pem, mode=0o640, dir_mode=0o750)
        log.info("made TLS certificate %s (%s)", path, why)
    if gid is not None:
        own(path, gid, 0o640)
    return cert, why


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":")


def _existing(path: Path, name: x509.Name, until: datetime.datetime
              ) -> tuple[x509.Certificate | None, str]:
    """The certificate at ``path`` if it can stay (valid ``until``), else None and why a new
    one is made."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return None, "new"
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        cert = x509.load_pem_x509_certificate(pem)
        serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        return None, "replaced: the old file could not be read"
    if cert.subject != name:
        return None, "replaced: the subject changed"
    if cert.not_valid_after_utc <= until:
        return None, "replaced: it had expired or was about to"
    return cert, "kept"


def _self_signed(name: x509.Name, now: datetime.datetime, profile: Profile
                 ) -> tuple[x509.Certificate, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = now.replace(microsecond=0) - datetime.timedelta(days=1)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key())
               .not_valid_before(start).not_valid_after(start + profile.validity))
    if profile.windows:
        builder = builder.serial_number(secrets.randbits(127) | 1 << 120).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=True,
            data_encipherment=True, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=False)
    else:
        builder = builder.serial_number(x509.random_serial_number()).add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                        critical=False)
        common = [a.value for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if common and isinstance(common[0], str) and common[0].isascii() and " " not in common[0]:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(common[0])]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return cert, pem + cert.public_bytes(serialization.Encoding.PEM)
