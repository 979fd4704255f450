"""Self-signed certificates for TLS tests, made with the ``openssl`` command."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


def self_signed(directory: Path, name: str = "localhost") -> Cert:
    """A self-signed certificate for localhost and 127.0.0.1 (its own CA), and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed: the TLS tests need it", pytrace=False)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return Cert(cert, key)
