"""The on-disk layout of the model store, as named constants.

The model store (``airlock install --store STORE``) is laid out like ``HF_HOME``, so vLLM and
transformers find models by their original ids with ``HF_HOME=STORE HF_HUB_OFFLINE=1``::

    STORE/
    ├── hub/                               = HF_HUB_CACHE
    │   └── models--org--name/
    │       ├── blobs/<sha256>
    │       ├── snapshots/<commit>/<path>  -> ../../blobs/<sha256> (relative symlinks)
    │       └── refs/<revision>            the commit, one line
    ├── gguf/<file name>                   -> ../hub/models--.../snapshots/<commit>/<file>: GGUF by name
    ├── wheels/<name>.whl                  pip install --no-index --find-links STORE/wheels ...
    ├── files/<path>                       plain files (configs, licences)
    ├── images/                            an OCI image layout: every installed image, by its digest
    │   ├── oci-layout, index.json         names: <repository>:<tag> (or @<digest>)
    │   └── blobs/sha256/<hex>             manifests, configs, layers (a shared layer once)
    └── .airlock/
        ├── store.json                     what is installed, with hashes (``airlock ls``, ``inventory``)
        ├── lock                           one install at a time
        ├── incoming/<bundle>/             verified blobs of an install in progress (moved by rename)
        └── bundles/<bundle>/              its manifest, signature and spec rewritten for the store

Bundles have their own format: :mod:`airlock.bundle.format.layout`.
"""

from __future__ import annotations

from typing import Final

STORE_HUB: Final = "hub"
STORE_GGUF: Final = "gguf"
STORE_WHEELS: Final = "wheels"
STORE_FILES: Final = "files"
STORE_IMAGES: Final = "images"
STORE_STATE: Final = ".airlock"
STORE_DB: Final = "store.json"
STORE_LOCK: Final = "lock"
STORE_INCOMING: Final = "incoming"
STORE_BUNDLES: Final = "bundles"
STORE_SPEC: Final = "airlock.yaml"
LOCAL_REPO_ORG: Final = "local"  # local folders and GGUF files become the repo ``local/<model name>``


def repo_folder(repo_id: str) -> str:
    """Hugging Face's cache folder for a model repo: ``org/name`` -> ``models--org--name``."""
    return "models--" + repo_id.replace("/", "--")


def local_repo(name: str) -> str:
    """The store repo id of a local model: ``local/<name>`` with characters HF ids do not allow as ``-``."""
    clean = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).strip(".-") or "model"
    return f"{LOCAL_REPO_ORG}/{clean}"
