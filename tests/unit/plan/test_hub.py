"""Plan from the Hub without the weights: a 30-shard 70B model planned from its headers alone (range
requests to the fake Hub, bytes counted), the same plan as its full local copy, the cache reused, and
each bad input one clear error with nothing left in the cache."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from airlock.errors import AirlockError, ConfigError, ModelFactsError, ModelNotFoundError
from airlock.plan import PlanOptions, plan, read_facts
from airlock.plan.hub import HEADER_PROBE, HubOptions, cached_hub_model, read_hub_model
from airlock.plan.serialize import plan_to_dict
from airlock.testing.fake_hub import FakeHub, SparseFile

# Llama-3.1-70B's shape (config.json of meta-llama/Llama-3.1-70B-Instruct); weights in bfloat16.
CONFIG_70B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192,
    "intermediate_size": 28672, "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
    "vocab_size": 128256, "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
    "rope_scaling": {"factor": 8.0, "rope_type": "llama3", "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
    "tie_word_embeddings": False,
}  # fmt: skip
GEN = {"temperature": 0.6, "top_p": 0.9}


def llama70b_tensors() -> list[tuple[str, list[int]]]:
    h, i, kv = 8192, 28672, 1024
    out: list[tuple[str, list[int]]] = [("model.embed_tokens.weight", [128256, h])]
    for n in range(80):
        p = f"model.layers.{n}."
        out += [(p + "self_attn.q_proj.weight", [h, h]), (p + "self_attn.k_proj.weight", [kv, h]),
                (p + "self_attn.v_proj.weight", [kv, h]), (p + "self_attn.o_proj.weight", [h, h]),
                (p + "mlp.gate_proj.weight", [i, h]), (p + "mlp.up_proj.weight", [i, h]),
                (p + "mlp.down_proj.weight", [h, i]), (p + "input_layernorm.weight", [h]),
                (p + "post_attention_layernorm.weight", [h])]  # fmt: skip
    return [*out, ("model.norm.weight", [h]), ("lm_head.weight", [128256, h])]


def shard_heads(shards: int = 30) -> dict[str, SparseFile]:
    """The model's tensors in ``shards`` files of about equal size: each file's header on its real size."""
    tensors = llama70b_tensors()
    total = sum(2 * _numel(s) for _, s in tensors)
    groups: list[list[tuple[str, list[int]]]] = [[] for _ in range(shards)]
    done = 0
    for name, shape in tensors:
        groups[min(shards - 1, done * shards // total)].append((name, shape))
        done += 2 * _numel(shape)
    files: dict[str, SparseFile] = {}
    for k, group in enumerate(groups, 1):
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in group:
            header[name] = {
                "dtype": "BF16",
                "shape": shape,
                "data_offsets": [offset, offset + 2 * _numel(shape)],
            }
            offset += 2 * _numel(shape)
        raw = json.dumps(header).encode()
        files[f"model-{k:05d}-of-{shards:05d}.safetensors"] = SparseFile(
            struct.pack("<Q", len(raw)) + raw, 8 + len(raw) + offset
        )
    return files


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def repo_70b() -> dict[str, bytes | SparseFile]:
    shards = shard_heads()
    weight_map: dict[str, str] = {}
    for name, f in shards.items():
        length = struct.unpack("<Q", f.head[:8])[0]
        for tensor in json.loads(f.head[8 : 8 + length]):
            if tensor != "__metadata__":
                weight_map[tensor] = name
    index = {"metadata": {"total_size": sum(f.size for f in shards.values())}, "weight_map": weight_map}
    return {
        "config.json": json.dumps(CONFIG_70B).encode(),
        "generation_config.json": json.dumps(GEN).encode(),
        "model.safetensors.index.json": json.dumps(index).encode(),
        "tokenizer.json": b'{"version": "1.0"}',
        **shards,
    }


def write_local_copy(files: dict[str, bytes | SparseFile], folder: Path) -> Path:
    """The full local copy: every file at its real size (the weights' bytes are zeros, sparse on disk)."""
    folder.mkdir(parents=True)
    for name, data in files.items():
        if isinstance(data, SparseFile):
            with (folder / name).open("wb") as fh:
                fh.write(data.head)
                fh.truncate(data.size)
        else:
            (folder / name).write_bytes(data)
    return folder


def gguf_bytes(layers: int = 4, data: int = 1 << 20) -> SparseFile:
    """A llama GGUF: its metadata, one Q4_0 tensor, then ``data`` bytes of tensor data."""

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    u32 = struct.Struct("<I").pack
    kv = [("general.architecture", 8, s("llama")), ("llama.block_count", 4, u32(layers)),
          ("llama.embedding_length", 4, u32(64)), ("llama.attention.head_count", 4, u32(4)),
          ("llama.attention.head_count_kv", 4, u32(1)), ("llama.context_length", 4, u32(2048)),
          ("llama.vocab_size", 4, u32(100))]  # fmt: skip
    body = b"GGUF" + struct.pack("<IQQ", 3, 1, len(kv))
    for key, vtype, value in kv:
        body += s(key) + u32(vtype) + value
    body += s("token_embd.weight") + u32(2) + struct.pack("<QQ", 64, 100) + struct.pack("<IQ", 2, 0)
    body += bytes(-len(body) % 32)
    return SparseFile(body, len(body) + data)


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the fake Hub on loopback is the only one asked


@pytest.fixture(scope="module")
def hub() -> FakeHub:
    hub = FakeHub()
    hub.add_repo("meta/llama-70b", repo_70b())
    hub.add_repo(
        "acme/pickled", {"config.json": json.dumps(CONFIG_70B).encode(), "pytorch_model.bin": b"\x80\x02"}
    )
    hub.add_repo("acme/one-gguf", {"README.md": b"hi", "tiny.Q4_0.gguf": gguf_bytes()})
    hub.add_repo("acme/two-gguf", {"a.Q4_0.gguf": gguf_bytes(), "b.Q8_0.gguf": gguf_bytes(layers=6)})
    hub.add_repo("acme/gated", {"config.json": b"{}"})
    hub.gated.add("acme/gated")
    return hub


@pytest.fixture(scope="module")
def url(hub: FakeHub) -> Iterator[str]:
    with hub.serve() as u:
        yield u


def _options(url: str, cache: Path, **kw: object) -> HubOptions:
    return HubOptions(cache=cache, endpoint=url, environ={}, **kw)  # type: ignore[arg-type]


def _comparable(p: dict[str, object]) -> dict[str, object]:
    model = dict(p["model"])  # type: ignore[call-overload]
    model.pop("source")
    return {**p, "model": model}


def test_a_30_shard_70b_model_is_planned_from_its_headers_as_from_its_full_copy(
    tmp_path: Path, hub: FakeHub, url: str
) -> None:
    files = repo_70b()
    local = write_local_copy(files, tmp_path / "local")
    served_before, ranges_before = hub.bytes_served, len(hub.ranges)

    m = read_hub_model("meta/llama-70b", _options(url, tmp_path / "cache"))

    served = hub.bytes_served - served_before
    assert m.read.bytes == served  # what plan counts is what the Hub sent
    assert m.read.bytes < 1_000_000  # a few hundred kilobytes for 141 GB of weights
    ranges = hub.ranges[ranges_before:]
    assert len(ranges) == 30 and all(r == f"bytes=0-{HEADER_PROBE - 1}" for _, r in ranges)
    assert m.read.requests == 1 + 3 + 30  # listing, config + generation config + index, one range per shard
    assert m.commit == hub.resolve("meta/llama-70b", "main")[0]  # type: ignore[index]
    assert m.facts.weight_bytes == read_facts(local).weight_bytes > 140 * 10**9
    for options in (PlanOptions(gpu="h100-80gb:4"), PlanOptions(gpu="a100-40gb:2"), PlanOptions(cpu=True)):
        assert _comparable(plan_to_dict(plan(m.facts, options))) == _comparable(
            plan_to_dict(plan(read_facts(local), options))
        )
    assert m.facts.generation == GEN


def test_a_second_plan_reads_the_cache(tmp_path: Path, hub: FakeHub, url: str) -> None:
    options = _options(url, tmp_path / "cache")
    first = read_hub_model("meta/llama-70b", options)
    again = read_hub_model("meta/llama-70b", options)
    assert again.read.requests == 1  # the revision's commit only (main may have moved)
    assert again.facts == first.facts
    served = hub.bytes_served
    by_commit = read_hub_model("meta/llama-70b", _options(url, tmp_path / "cache", revision=first.commit))
    assert (by_commit.read.requests, hub.bytes_served) == (0, served)
    offline = cached_hub_model("meta/llama-70b", None, tmp_path / "cache")
    assert offline is not None and offline.facts == first.facts


def test_a_gguf_only_repo_is_planned_from_its_header(tmp_path: Path, hub: FakeHub, url: str) -> None:
    m = read_hub_model("acme/one-gguf", _options(url, tmp_path / "cache"))
    assert (m.gguf, m.facts.format, m.facts.num_layers) == ("tiny.Q4_0.gguf", "gguf", 4)
    assert m.read.bytes < 300 * 1024  # the header's range, not the file's megabyte
    two = _options(url, tmp_path / "cache", gguf="b.Q8_0.gguf")
    assert read_hub_model("acme/two-gguf", two).facts.num_layers == 6


@pytest.mark.parametrize(
    ("repo", "options", "error", "words"),
    [
        ("acme/nope", {}, ModelNotFoundError, "acme/nope: no such model on the Hub at"),
        ("meta/llama-70b", {"revision": "v9"}, ModelNotFoundError, "has no revision 'v9'"),
        ("acme/gated", {}, ConfigError, "acme/gated is gated"),
        ("acme/pickled", {}, ModelFactsError, "has only pickle weights (pytorch_model.bin)"),
        ("acme/two-gguf", {}, ModelFactsError, "holds only GGUF files (a.Q4_0.gguf, b.Q8_0.gguf)"),
        ("acme/two-gguf", {"gguf": "c.gguf"}, ModelFactsError, "has no GGUF file 'c.gguf'"),
    ],
)
def test_bad_input_is_one_clear_error_and_nothing_is_cached(
    tmp_path: Path, url: str, repo: str, options: dict[str, object], error: type[AirlockError], words: str
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(error) as caught:
        read_hub_model(repo, _options(url, cache, **options))
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_a_gated_repo_with_a_token(tmp_path: Path, url: str) -> None:
    with pytest.raises(ModelFactsError, match="field 'architectures' is missing"):
        read_hub_model(
            "acme/gated", _options(url, tmp_path, token="hf_token")
        )  # past the gate: {} is no model


def test_a_hub_that_is_down(tmp_path: Path) -> None:
    hub = FakeHub()
    hub.add_repo("meta/llama-70b", repo_70b())
    hub.failing = True
    with hub.serve() as url, pytest.raises(AirlockError, match="answered 503 for meta/llama-70b"):
        read_hub_model("meta/llama-70b", _options(url, tmp_path / "cache"))
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(AirlockError, match=f"the Hub at {closed} cannot be reached"):
        read_hub_model("meta/llama-70b", _options(closed, tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()


# --- through the CLI ---------------------------------------------------------------------------


def _run(args: list[str], url: str, home: Path) -> Result:
    from airlock.cli.main import app

    env = {"HF_ENDPOINT": url, "AIRLOCK_HOME": str(home / "home"), "AIRLOCK_CACHE": str(home / "cache"),
           "HF_HUB_CACHE": str(home / "hf"), "COLUMNS": "100"}  # fmt: skip
    return CliRunner().invoke(app, ["plan", *args], env=env)


def test_the_cli_plans_a_hub_model_and_says_what_it_read(tmp_path: Path, hub: FakeHub, url: str) -> None:
    result = _run(["meta/llama-70b", "--gpu", "h100-80gb:4", "--json"], url, tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    commit = hub.resolve("meta/llama-70b", "main")[0]  # type: ignore[index]
    assert data["hub"]["commit"] == commit and data["hub"]["requests"] == 34
    assert 0 < data["hub"]["bytes_read"] < 1_000_000 and data["fits"]
    again = _run(["meta/llama-70b@" + commit, "--gpu", "h100-80gb:4"], url, tmp_path)
    assert again.exit_code == 0 and "from airlock's cache" in again.output, again.output
    assert f"meta/llama-70b @ {commit[:12]}" in again.output


def test_offline_names_every_place_it_looked(tmp_path: Path, url: str) -> None:
    result = _run(["meta/llama-70b", "--offline"], url, tmp_path)
    assert isinstance(result.exception, ModelNotFoundError)
    message = str(result.exception)
    assert (
        "Hugging Face cache at" in message
        and "airlock's store at" in message
        and "online plan cached" in message
    )
    assert _run(["meta/llama-70b", "--gpu", "h100-80gb:4"], url, tmp_path).exit_code == 0
    offline = _run(["meta/llama-70b", "--offline", "--gpu", "h100-80gb:4", "--json"], url, tmp_path)
    assert offline.exit_code == 0 and json.loads(offline.output)["hub"]["from_cache"]


def test_the_crossing_of_a_spec(tmp_path: Path, hub: FakeHub, url: str) -> None:
    from airlock.bundle.format.inventory import Inventory, InventoryBlob

    (tmp_path / "licence.txt").write_bytes(b"x" * 1000)
    (tmp_path / "app.tar").write_bytes(b"y" * 5000)
    spec = tmp_path / "airlock.yaml"
    spec.write_text(
        f"models:\n  - name: big\n    hf: {{repo: meta/llama-70b, ignore: ['tokenizer.json']}}\n"
        f"files:\n  - path: {tmp_path / 'licence.txt'}\n"
        f"images:\n  - oci-archive:{tmp_path / 'app.tar'}\n  - vllm/vllm-openai:v0.11.0\n"
        "hardware: {gpu: h100-80gb, count: 4}\n"
    )
    weights = sum(f.size for f in shard_heads().values())
    small = sum(len(v) for k, v in repo_70b().items() if isinstance(v, bytes) and k != "tokenizer.json")
    args = [
        "--config",
        str(spec),
        "--volume-size",
        "25GB",
        "--parity",
        "10",
        "--media-speed",
        "200MB/s",
        "--json",
    ]
    data = json.loads(_run(args, url, tmp_path).output)
    c = data["crossing"]
    assert [(i["kind"], i["bytes"]) for i in c["items"]] == [
        ("model", weights + small),
        ("files", 1000),
        ("image", 5000),
        ("image", None),
    ]
    carried = weights + small + 6000
    assert c["carried_bytes"] == carried and c["unknown"] == ["vllm/vllm-openai:v0.11.0"]
    assert (c["data_volumes"], c["parity_volumes"]) == (-(-carried // (25 * 10**9)), 1) == (6, 1)
    assert c["written_bytes"] == carried + 25 * 10**9
    assert c["copy_seconds"] == round((carried + 25 * 10**9) / 200e6, 1)
    # the other side already holds the first ten shards
    listing = {f.path: f for f in read_hub_model("meta/llama-70b", _options(url, tmp_path / "c")).files}
    held = [listing[f"model-{k:05d}-of-00030.safetensors"] for k in range(1, 11)]
    inventory = Inventory(
        created="2026-01-01T00:00:00Z",
        airlock_version="0",
        store="/srv/store",
        blobs=[InventoryBlob(sha256=str(f.sha256), size=f.size) for f in held],
    )
    (tmp_path / "inventory.json").write_bytes(inventory.to_bytes())
    delta = json.loads(_run([*args, "--base", str(tmp_path / "inventory.json")], url, tmp_path).output)[
        "crossing"
    ]
    assert delta["held_bytes"] == sum(f.size for f in held)
    assert delta["carried_bytes"] == carried - delta["held_bytes"]
    shown = _run(args[:-1], url, tmp_path)
    assert shown.exit_code == 0, shown.output
    assert (
        "6 volumes of 25.0 GB + 1 parity volume (10%)" in shown.output
        and "at 200.0 MB/s (given)" in shown.output
    )
