"""The whole crossing with real engines: pack, verify, install into a store, then `airlock serve` it.

* SmolLM2's GGUF (llama-server), packed from a local file, served from the store by the spec that
  install writes;
* a tiny Llama (vLLM CPU), packed from a Hugging Face repo through huggingface_hub's client against
  a fake Hub, then loaded by its original id with HF_HUB_OFFLINE=1 by transformers, and served.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
import yaml

from airlock.bundle.airgap.install import InstallOptions, install
from airlock.bundle.airgap.verify import VerifyOptions, verify
from airlock.bundle.format.reader import VolumeSet
from airlock.bundle.format.sign import generate_keypair
from airlock.bundle.staging.pack import PackOptions, pack
from airlock.serving.default_model import locate_default_model
from airlock.settings import Settings
from airlock.testing.fake_hub import FakeHub

AIRLOCK = [sys.executable, "-m", "airlock.cli.main"]


@contextmanager
def serving(spec: Path, home: Path, timeout: float) -> Iterator[tuple[str, str]]:
    """`airlock serve --config SPEC --port 0` as a user runs it; yields (url, the first-run admin key)."""
    env = {**os.environ, "AIRLOCK_HOME": str(home)}
    proc = subprocess.Popen(
        [*AIRLOCK, "serve", "--config", str(spec), "--port", "0"], env=env, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    lines: list[str] = []
    url = token = None
    deadline = time.monotonic() + timeout
    try:
        while url is None or token is None:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            line = proc.stderr.readline()
            lines.append(line)
            if m := re.search(r"ready: (http://127\.0\.0\.1:\d+)/v1", line):
                url = m.group(1)
            if m := re.fullmatch(r"\s+(al-[0-9a-f]{12}-\S+)\s*", line):
                token = m.group(1)
        yield url, token
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_smollm2_packed_installed_and_served_from_the_store(
    tmp_path: Path, settings: Settings, llama_server: Path
) -> None:
    gguf = locate_default_model(settings)
    spec = tmp_path / "staging" / "airlock.yaml"
    spec.parent.mkdir()
    spec.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "smollm2",
                        "aliases": ["default"],
                        "gguf": str(gguf),
                        "engine": {"kind": "llamacpp", "parallel": 2, "ctx_size": 2048, "threads": 2},
                    }
                ]
            }
        )
    )
    keys = generate_keypair(tmp_path / "staging.key")
    packed = pack(
        PackOptions(spec_path=spec, out=tmp_path / "bundle", volume_size=40_000_000, sign_key=keys.private)
    )
    assert len(packed.volumes) == 3, "98 MB over 40 MB volumes"
    report = verify(VerifyOptions(VolumeSet([v.path for v in packed.volumes], trust=[keys.public])))
    assert report.ok, report.problems

    store = tmp_path / "site" / "store"
    for v in packed.volumes:  # one USB stick after another
        result = install(InstallOptions(VolumeSet([v.path], trust=[keys.public]), store=store))
    assert result.complete and result.spec_path is not None
    installed = store / "gguf" / gguf.name
    assert installed.is_symlink() and installed.stat().st_size == gguf.stat().st_size

    with serving(result.spec_path, tmp_path / "site" / "home", timeout=120) as (url, token):
        client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model="default",
            temperature=0,
            max_tokens=24,
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
        )
        assert "Paris" in (reply.choices[0].message.content or "")


@pytest.fixture
def hub_bundle(tiny_llama: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The tiny Llama published on a fake Hub as org/tiny-llama, packed from there: (bundle, public key)."""
    hub = FakeHub()
    hub.add_repo(
        "org/tiny-llama",
        {p.relative_to(tiny_llama).as_posix(): p.read_bytes() for p in tiny_llama.rglob("*") if p.is_file()},
    )
    spec = tmp_path / "staging" / "airlock.yaml"
    spec.parent.mkdir()
    engine = {"kind": "vllm", "max_model_len": 256, "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}}
    spec.write_text(
        yaml.safe_dump({"models": [{"name": "tiny", "hf": {"repo": "org/tiny-llama"}, "engine": engine}]})
    )
    keys = generate_keypair(tmp_path / "staging.key")
    with hub.serve() as url:
        packed = pack(
            PackOptions(
                spec_path=spec,
                out=tmp_path / "bundle",
                sign_key=keys.private,
                hf_endpoint=url,
                hf_cache=tmp_path / "hf",
            )
        )
    return packed.out, keys.public


def test_hub_model_loads_by_its_original_id_offline(
    hub_bundle: tuple[Path, Path], vllm_python: Path, tmp_path: Path
) -> None:
    bundle, public = hub_bundle
    store = tmp_path / "store"
    assert install(InstallOptions(VolumeSet([bundle], trust=[public]), store=store)).complete
    code = (
        "from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained('org/tiny-llama')\n"
        "model = AutoModelForCausalLM.from_pretrained('org/tiny-llama')\n"
        "print(type(model).__name__, len(tok('hello world')['input_ids']) > 0)\n"
    )
    env = {**os.environ, "HF_HOME": str(store), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run(
        [str(vllm_python), "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["LlamaForCausalLM", "True"]


def test_hub_model_served_by_vllm_from_the_store(
    hub_bundle: tuple[Path, Path], vllm_python: Path, tmp_path: Path
) -> None:
    bundle, public = hub_bundle
    store = tmp_path / "store"
    result = install(InstallOptions(VolumeSet([bundle], trust=[public]), store=store))
    assert result.spec_path is not None
    served = yaml.safe_load(result.spec_path.read_text())
    assert served["models"][0]["hf"]["repo"] == "org/tiny-llama"
    with serving(result.spec_path, tmp_path / "home", timeout=600) as (url, token):
        client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model="tiny", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
