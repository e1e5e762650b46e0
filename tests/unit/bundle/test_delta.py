"""Delta bundles: --base an earlier manifest or, better, the store's signed inventory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from airlock.bundle.airgap.install import InstallOptions, install
from airlock.bundle.airgap.verify import VerifyOptions, verify
from airlock.bundle.format import layout
from airlock.bundle.format.inventory import Inventory, make_inventory, write_inventory
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import KeyPair, generate_keypair, load_private_key
from airlock.errors import SignatureError, StoreError
from airlock.store import Store
from airlock.testing.tiny_files import write_safetensors
from bundle_helpers import Staging, do_pack


@pytest.fixture
def site_keys(tmp_path: Path) -> KeyPair:
    return generate_keypair(tmp_path / "keys" / "site.key")


def _grow(staging: Staging) -> None:
    """Version 2 of the staging side: one new file in the model, the rest unchanged."""
    write_safetensors(staging.model_dir / "extra.safetensors", {"w": ("BF16", [32, 32])}, seed=7)


def test_inventory_based_delta_carries_exactly_what_is_missing(
    tmp_path: Path, staging: Staging, keys: KeyPair, site_keys: KeyPair
) -> None:
    store = Store(tmp_path / "store")
    first = do_pack(staging.spec, tmp_path / "v1", keys)
    install(InstallOptions(VolumeSet([first.out], trust=[keys.public]), store=store.root))

    inv_path = tmp_path / "inventory.json"
    write_inventory(make_inventory(store), inv_path, key=load_private_key(site_keys.private))
    inventory = Inventory.from_bytes(inv_path.read_bytes())
    assert {b.sha256 for b in inventory.blobs} == {b.sha256 for b in first.manifest.blobs}
    assert {m.repo for m in inventory.models} == {"local/tiny", "local/smol"}

    _grow(staging)
    delta = do_pack(staging.spec, tmp_path / "v2", keys, base=inv_path, trust=(site_keys.public,))
    extra = (staging.model_dir / "extra.safetensors").read_bytes()
    carried = [b.sha256 for b in delta.manifest.blobs if b.carried]
    assert carried == [hashlib.sha256(extra).hexdigest()], "exactly the new file travels"
    assert delta.skipped_blobs == len(first.manifest.blobs)
    assert delta.carried_bytes == len(extra)
    assert delta.manifest.base is not None and delta.manifest.base.kind == "inventory"

    report = verify(VerifyOptions(VolumeSet([delta.out], trust=[keys.public])))
    assert report.ok and any("not carried" in n for n in report.notes)
    result = install(InstallOptions(VolumeSet([delta.out], trust=[keys.public]), store=store.root))
    tiny = next(m for m in result.models if m.name == "tiny")
    assert (tiny.path / "extra.safetensors").read_bytes() == extra
    assert (tiny.path / "model.safetensors").is_file(), "the unchanged files are in the new snapshot too"


def test_a_delta_into_a_store_that_lacks_the_base_installs_nothing(
    tmp_path: Path, staging: Staging, keys: KeyPair
) -> None:
    first = do_pack(staging.spec, tmp_path / "v1", keys)
    _grow(staging)
    delta = do_pack(
        staging.spec,
        tmp_path / "v2",
        keys,
        base=first.volumes[0].path / layout.MANIFEST,
        trust=(keys.public,),
    )
    assert delta.manifest.base is not None and delta.manifest.base.kind == "manifest"
    with pytest.raises(StoreError, match="install the bundle it was made against first"):
        install(InstallOptions(VolumeSet([delta.out], trust=[keys.public]), store=tmp_path / "empty"))
    assert not (tmp_path / "empty" / "hub" / "models--local--tiny").exists()


def test_a_tampered_inventory_is_refused(
    tmp_path: Path, staging: Staging, keys: KeyPair, site_keys: KeyPair
) -> None:
    store = Store(tmp_path / "store")
    first = do_pack(staging.spec, tmp_path / "v1", keys)
    install(InstallOptions(VolumeSet([first.out], trust=[keys.public]), store=store.root))
    inv_path = tmp_path / "inventory.json"
    write_inventory(make_inventory(store), inv_path, key=load_private_key(site_keys.private))
    raw = json.loads(inv_path.read_bytes())
    raw["blobs"] = raw["blobs"][:1]
    inv_path.write_text(json.dumps(raw, sort_keys=True, separators=(",", ":")))
    with pytest.raises(SignatureError, match="changed after signing"):
        do_pack(staging.spec, tmp_path / "v2", keys, base=inv_path, trust=(site_keys.public,))


def test_an_unsigned_base_is_used_with_a_warning(tmp_path: Path, staging: Staging, keys: KeyPair) -> None:
    store = Store(tmp_path / "store")
    first = do_pack(staging.spec, tmp_path / "v1", keys)
    install(InstallOptions(VolumeSet([first.out], trust=[keys.public]), store=store.root))
    inv_path = tmp_path / "inventory.json"
    write_inventory(make_inventory(store), inv_path, key=None)
    delta = do_pack(staging.spec, tmp_path / "v2", keys, base=inv_path)
    assert delta.skipped_blobs == len(first.manifest.blobs)
    assert any("not checked against a key" in w for w in delta.warnings)
