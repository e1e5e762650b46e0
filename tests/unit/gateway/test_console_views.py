"""The console's store view and the engines' digests, from a store's index as install writes it."""

from __future__ import annotations

from pathlib import Path

from airlock.gateway.audit import model_identities
from airlock.gateway.console import views
from airlock.store.db import StoreDb, StoredBundle, StoredFile, StoredImage, StoredModel
from airlock.store.store import Store

BUNDLE = "b" * 64


def stored_model(installed: str, sha: str) -> StoredModel:
    return StoredModel(name="tiny", repo="org/tiny", revision="main", commit="c" * 40, source="hf",
                       files=[StoredFile(path="model.safetensors", size=2048, sha256=sha)],
                       bundle=BUNDLE, installed=installed)  # fmt: skip


def test_the_store_view_lists_models_images_and_bundles_with_dates_and_signers(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    old, new = stored_model("2026-11-01T00:00:00Z", "1" * 64), stored_model("2026-11-20T00:00:00Z", "2" * 64)
    image = StoredImage(reference="vllm/vllm-openai:v0.11.0", repository="docker.io/vllm/vllm-openai",
                        tag="v0.11.0", digest="sha256:" + "d" * 64, media_type="application/vnd.oci.image.manifest.v1+json",
                        platform="linux/amd64", size=4096, files=[], bundle=BUNDLE,
                        installed="2026-11-20T00:00:00Z")  # fmt: skip
    bundle = StoredBundle(id=BUNDLE, created="2026-11-19T10:00:00Z", installed="2026-11-20T00:00:00Z",
                          signed_by="staging-2026", airlock_version="0.9.0")  # fmt: skip
    store.save_db(StoreDb(models=[old, new], images=[image], bundles=[bundle]))

    shown = views.store_contents(store.root)
    assert shown["store"] == str(store.root)
    assert [(m["repo"], m["size"], m["installed"]) for m in shown["models"]] == [
        ("org/tiny", 2048, "2026-11-01T00:00:00Z"), ("org/tiny", 2048, "2026-11-20T00:00:00Z"),
    ]  # fmt: skip
    assert (
        shown["images"][0]["digest"] == "sha256:" + "d" * 64
        and shown["images"][0]["platform"] == "linux/amd64"
    )
    assert shown["bundles"] == [{"id": BUNDLE, "created": "2026-11-19T10:00:00Z", "installed": "2026-11-20T00:00:00Z",
                                 "signed_by": "staging-2026", "airlock_version": "0.9.0"}]  # fmt: skip
    # the engines view's digest: the newest install of the model, as the audit names its weights
    assert views.store_digests(store.root) == model_identities([new])
    assert views.store_contents(None)["models"] == [] and views.store_digests(tmp_path / "nothing") == {}
