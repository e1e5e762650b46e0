"""The bootstrap folder on the first volume: airlock installed on the air-gapped side with plain tools.

The other side needs airlock before it can verify anything, so the first volume carries
``bootstrap/``: airlock's wheel and its dependencies under their own file names, ``requirements.txt``
pinning each by version and SHA-256, ``bootstrap.sh``, and ``SHA256SUMS`` listing every other file.
There, with nothing but coreutils and Python::

    sha256sum vol-0001/bootstrap/SHA256SUMS   # compare with the SHA-256 pack printed
    sh vol-0001/bootstrap/bootstrap.sh        # sha256sum -c, a venv, pip install --no-index --require-hashes
    ~/airlock-venv/bin/airlock verify ...     # then the whole bundle, with the real signature

The manifest records every file's size and SHA-256 and the list's own hash (:class:`Bootstrap`), so
``airlock verify`` checks the folder like the rest of the volume.

Example::

    made = make_bootstrap(wheels, target="platform=manylinux2014_x86_64 python=3.11",
                          python_version="3.11", airlock_version="0.1.0")
    made.record.sums_sha256  # what pack prints
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

from airlock.bundle.format import layout
from airlock.bundle.format.manifest import Bootstrap, BootstrapFile
from airlock.common.fileio import hash_file
from airlock.common.wheels import pinned_requirements
from airlock.errors import SourceError


@dataclass(frozen=True)
class MadeBootstrap:
    record: Bootstrap  # for the manifest
    wheels: dict[str, Path]  # file name -> the wheel to copy
    texts: dict[str, bytes]  # file name -> the bytes to write (requirements, script, sums)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.record.files)


def wheel_name_version(name: str) -> tuple[str, str]:
    """A wheel file's distribution name and version (``numpy-2.1.0-cp311-...whl`` -> numpy, 2.1.0),
    read by ``packaging`` (pip's own parser of wheel names)."""
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    try:
        dist, version, _, _ = parse_wheel_filename(name)
    except InvalidWheelFilename as exc:
        raise SourceError(f"{name}: not a wheel file name ({exc})") from exc
    return str(dist), str(version)


def make_bootstrap(
    wheels: list[Path], *, target: str, python_version: str, airlock_version: str
) -> MadeBootstrap:
    digests = {p.name: hash_file(p) for p in wheels}
    if len(digests) != len(wheels):
        raise SourceError("bootstrap: two wheels have the same file name")
    for name in digests:
        wheel_name_version(name)  # a file name pip cannot read is a clear error here
    requirements = pinned_requirements((name, d.sha256) for name, d in digests.items())
    texts = {
        layout.BOOTSTRAP_REQUIREMENTS: (
            f"# airlock {airlock_version} and its dependencies for {target}; pip install --require-hashes\n"
            + requirements
        ).encode(),
        layout.BOOTSTRAP_SCRIPT: script(
            python_version=python_version, airlock_version=airlock_version
        ).encode(),
    }
    listed = {name: (d.size, d.sha256) for name, d in digests.items()}
    listed |= {name: (len(data), hashlib.sha256(data).hexdigest()) for name, data in texts.items()}
    sums = "".join(f"{sha}  {name}\n" for name, (_, sha) in sorted(listed.items())).encode()
    texts[layout.BOOTSTRAP_SUMS] = sums
    listed[layout.BOOTSTRAP_SUMS] = (len(sums), hashlib.sha256(sums).hexdigest())
    record = Bootstrap(
        target=target,
        airlock_version=airlock_version,
        files=[BootstrapFile(path=n, size=size, sha256=sha) for n, (size, sha) in sorted(listed.items())],
        sums_sha256=listed[layout.BOOTSTRAP_SUMS][1],
    )
    return MadeBootstrap(record, {p.name: p for p in wheels}, texts)


def script(*, python_version: str, airlock_version: str) -> str:
    """bootstrap.sh: check every file, make a venv, install the wheels by hash, say what to run next."""
    want = shlex.quote(python_version)
    return f"""#!/bin/sh
# Install airlock {airlock_version} from the wheels beside this script, without any network:
#   1. compare `sha256sum SHA256SUMS` with the SHA-256 that `airlock pack` printed
#   2. sh bootstrap.sh [VENV]      (VENV: where to install; default $AIRLOCK_VENV, else ~/airlock-venv)
# It checks every file with `sha256sum -c SHA256SUMS`, makes a virtual environment with Python
# {python_version} ($PYTHON, else python3) and installs the wheels pinned by hash (pip --no-index
# --require-hashes). Then `airlock verify` checks the whole bundle with its real signature.
set -eu
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
venv=${{1:-${{AIRLOCK_VENV:-$HOME/airlock-venv}}}}
python=${{PYTHON:-python3}}
want={want}

cd "$here"
echo "bootstrap: checking every file against SHA256SUMS"
if ! sha256sum -c --strict --quiet SHA256SUMS; then
    echo "bootstrap: a file does not match SHA256SUMS: do not install from this volume" >&2
    exit 1
fi
have=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || {{
    echo "bootstrap: no $python here: set PYTHON to a Python $want" >&2
    exit 1
}}
if [ "$have" != "$want" ]; then
    echo "bootstrap: the wheels are for Python $want, and $python is Python $have: set PYTHON" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" || {{
        echo "bootstrap: $python cannot make a virtual environment (on Debian: apt install python3-venv)" >&2
        exit 1
    }}
fi
# only the files here, pinned by hash: no index, no pip configuration from this machine
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CONSTRAINT PIP_REQUIREMENT PIP_NO_INDEX
PIP_CONFIG_FILE=/dev/null
export PIP_CONFIG_FILE
"$venv/bin/python" -m pip install --no-index --find-links "$here" --require-hashes \\
    --only-binary=:all: --disable-pip-version-check --no-input -r "$here/requirements.txt"
volume=$(dirname -- "$here")
echo
echo "bootstrap: airlock {airlock_version} is installed in $venv"
echo "check the whole bundle (give every volume, or the folder that holds them) with its real signature:"
echo "  $venv/bin/airlock verify $volume [OTHER VOLUMES...] --trust KEY.pub"
"""
