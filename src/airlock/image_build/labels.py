"""The image's labels: the OCI annotation keys (``org.opencontainers.image.*``) and airlock's own
(``io.airlock.*``) for what the image holds. Pure: made from :class:`Contents` alone.

Lists are one label each, ``name=version`` joined by spaces, so that ``skopeo inspect`` shows them
and a script can split them; the full record is the build's JSON summary.
"""

from __future__ import annotations

import datetime as dt

from airlock.image_build.options import Contents

TITLE = "airlock"
DESCRIPTION = (
    "airlock's OpenAI-compatible gateway with llama.cpp's llama-server and the embedded default model "
    "(SmolLM2-135M-Instruct), on the CPU, offline"
)
LICENSES = "Apache-2.0 AND MIT"  # airlock and the model: Apache-2.0; llama.cpp: MIT (Debian's: in the root)
URL = "https://github.com/airlock/airlock"


def created(epoch: int) -> str:
    """SOURCE_DATE_EPOCH as RFC 3339 (UTC), what OCI's ``created`` fields hold."""
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pairs(pairs: tuple[tuple[str, str], ...]) -> str:
    return " ".join(f"{name}={version}" for name, version in pairs)


def image_labels(contents: Contents, *, epoch: int) -> dict[str, str]:
    """Every label of the image, sorted by key."""
    labels = {
        "org.opencontainers.image.title": TITLE,
        "org.opencontainers.image.description": DESCRIPTION,
        "org.opencontainers.image.version": contents.airlock_version,
        "org.opencontainers.image.revision": contents.airlock_revision,
        "org.opencontainers.image.created": created(epoch),
        "org.opencontainers.image.licenses": LICENSES,
        "org.opencontainers.image.source": URL,
        "org.opencontainers.image.base.name": f"debian:{contents.debian_suite} (mmdebstrap)",
        "io.airlock.debian.suite": contents.debian_suite,
        "io.airlock.debian.created": created(contents.debian_epoch),
        "io.airlock.debian.packages": _pairs(contents.debian_packages),
        "io.airlock.python.version": contents.python_version,
        "io.airlock.python.packages": _pairs(contents.python_packages),
        "io.airlock.llama-cpp.commit": contents.llama_cpp_commit,
        "io.airlock.llama-cpp.native": contents.llama_cpp_native,
        "io.airlock.model.file": contents.model_file,
        "io.airlock.model.sha256": contents.model_sha256,
        "io.airlock.model.size": str(contents.model_size),
    }
    return dict(sorted(labels.items()))
