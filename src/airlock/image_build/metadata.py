"""Reading what a staged root holds: Debian's package database and Python's installed distributions.

Pure functions over text and folders, so that they are tested without building anything.
"""

from __future__ import annotations

from email.parser import HeaderParser
from pathlib import Path


def dpkg_installed(status: str) -> tuple[tuple[str, str], ...]:
    """``(package, version)`` of every installed package in a dpkg status file, sorted by name."""
    found: list[tuple[str, str]] = []
    for paragraph in status.split("\n\n"):
        fields: dict[str, str] = {}
        for line in paragraph.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue  # a continuation line (descriptions, conffiles)
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            name = fields["Package"]
            arch = fields.get("Architecture", "")
            # Multi-Arch: same packages are named with their architecture, as dpkg -l does
            if fields.get("Multi-Arch") == "same" and arch:
                name = f"{name}:{arch}"
            found.append((name, fields.get("Version", "")))
    return tuple(sorted(found))


def python_distributions(site_packages: Path) -> tuple[tuple[str, str], ...]:
    """``(name, version)`` of every distribution in a site-packages folder (its ``*.dist-info``), sorted
    case-insensitively by name."""
    found: list[tuple[str, str]] = []
    for meta in site_packages.glob("*.dist-info/METADATA"):
        headers = HeaderParser().parsestr(
            meta.read_text(encoding="utf-8", errors="replace"), headersonly=True
        )
        name, version = headers.get("Name"), headers.get("Version")
        if name and version:
            found.append((str(name), str(version)))
    return tuple(sorted(found, key=lambda item: item[0].lower()))
