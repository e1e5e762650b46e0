"""The README's commands, run in order as a newcomer would type them: on a fresh AIRLOCK_HOME, at 80
columns, in a folder holding the README's airlock.yaml (with small stand-ins for its model files).

Each command must exit 0 without a traceback, and no table line may be wider than 80 columns. A
command that cannot run here (it needs a running server, real media or the network) is listed in
SKIPPED with the reason; a README command that is neither run nor skipped fails the test, and so
does a skip that no longer matches a README line.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import struct
from pathlib import Path

import pytest

README = Path(__file__).parents[3] / "README.md"
WIDTH = 80

SKIPPED = {
    "airlock serve": "serves until Ctrl-C (tests/unit/serving start it with the fake engine)",
    "airlock bench http://127.0.0.1:8000 --concurrency 1,8,32 --duration 30s --slo ttft=500ms,itl=50ms": (
        "needs a running server"
    ),
    "airlock bench http://10.0.0.5:8000/v1 -m smollm2 --rate 1,4,8 --arrival poisson --requests 200": (
        "needs a running server"
    ),
    "airlock bench http://127.0.0.1:8000 --dataset builtin:chat": "needs a running server",
    "airlock bench compare before.json after.json --html compare.html": "needs two bench results",
    "airlock bench report run.json -o run.html": "needs bench results",
    "airlock pack airlock.yaml --out bundle/ --volume-size 25G --parity 10": "packs real model files",
    "airlock verify /media/disc1 /media/disc2 ...": "needs mounted media",
    "airlock install /media/disc1 --store /srv/store": "needs mounted media",
    "airlock install /media/disc1 --store /srv/store --registry registry.site:5000": "needs mounted media and a registry",
    "airlock doctor airlock.yaml --site-network 10.20.0.0/16": "fails by design on a host with a default route (this one)",
    "airlock deploy compose airlock.yaml --out /srv/site --up": "needs an installed store and dockerd (tests/integration/test_deploy_compose.py)",
    "airlock deploy compose airlock.yaml --out /srv/site --gpus-per-node 8": "needs an installed store (tests/unit/deploy/test_ray_compose.py)",
    "airlock deploy k8s airlock.yaml --out k8s/": "needs an installed store with images (tests/unit/deploy/test_k8s_cli.py)",
    "airlock serve --config /srv/store/.airlock/bundles/<id>/airlock.yaml": "needs an installed bundle",
    "airlock ls --store /srv/store": "needs the store that install makes",
    "airlock inventory --store /srv/store --out inventory.json": "needs the store that install makes",
    "airlock pack airlock.yaml --out update/ --base inventory.json --trust site.pub": "needs inventory.json",
    "airlock accept record airlock.yaml --prompts golden.jsonl --out golden.json": "serves real models (tests/integration/test_accept.py)",
    "airlock accept check STORE/.airlock/bundles/B/airlock.yaml --out acceptance/": "needs an installed store and root (tests/integration/test_accept.py)",
    "airlock accept verify-report acceptance/report.json --trust site.key.pub": "needs a report (tests/unit/accept/test_report.py)",
}

# Commands whose documented outcome is not exit 0.
EXIT_CODES = {
    # the README's point: the newest vLLM needs a newer driver, and plan names the release that runs
    "airlock plan meta-llama/Llama-3.1-70B-Instruct --gpu h100-80gb:8 --driver 550.54.14 --json": 6,
}


def readme_commands(text: str) -> list[str]:
    """Every ``airlock ...`` line of the README's code blocks, in order, without its comment."""
    commands = []
    for block in re.findall(r"```(?:console|bash|shell)\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.removeprefix("$ ").strip()
            if line.startswith("airlock "):
                commands.append(shlex.join(shlex.split(line, comments=True)).replace("'", ""))
    return commands


def _readme_yaml(text: str) -> str:
    blocks: list[str] = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    return next(b for b in blocks if "models:" in b)


def _llama_folder(folder: Path, *, hidden: int, inter: int, layers: int, heads: int, kv: int) -> Path:
    """A Llama checkpoint's config.json and safetensors header at full size: the data is a sparse hole."""
    vocab = 128256
    folder.mkdir(parents=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 131072,
              "torch_dtype": "bfloat16", "rope_theta": 500000.0,
              "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    kv_dim = hidden // heads * kv
    shapes = {"model.embed_tokens.weight": [vocab, hidden], "lm_head.weight": [vocab, hidden],
              "model.norm.weight": [hidden]}  # fmt: skip
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": [hidden, hidden], p + "self_attn.k_proj.weight": [kv_dim, hidden],
                   p + "self_attn.v_proj.weight": [kv_dim, hidden], p + "self_attn.o_proj.weight": [hidden, hidden],
                   p + "mlp.gate_proj.weight": [inter, hidden], p + "mlp.up_proj.weight": [inter, hidden],
                   p + "mlp.down_proj.weight": [hidden, inter], p + "input_layernorm.weight": [hidden],
                   p + "post_attention_layernorm.weight": [hidden]}  # fmt: skip
    header: dict[str, object] = {}
    offset = 0
    for name, shape in shapes.items():
        size = 2 * shape[0] * (shape[1] if len(shape) > 1 else 1)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with (folder / "model.safetensors").open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return folder


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home and a working folder that holds what the README's commands refer to."""
    from airlock.cli import output
    from airlock.serving.default_model import locate_default_model
    from airlock.settings import Settings

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("AIRLOCK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    for console in (output.out, output.err):
        monkeypatch.setattr(console, "width", WIDTH)
    text = README.read_text()
    (work / "airlock.yaml").write_text(_readme_yaml(text))
    try:
        gguf = locate_default_model(Settings.from_env())
    except Exception as exc:  # the README's `make setup` installs it
        pytest.skip(f"the default model is not installed: {exc}")
    (work / "models").mkdir()
    shutil.copyfile(gguf, work / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    _llama_folder(work / "models" / "tiny-llama", hidden=64, inter=128, layers=2, heads=4, kv=2)
    _llama_folder(work / "Llama-3.1-8B-Instruct", hidden=4096, inter=14336, layers=32, heads=32, kv=8)
    repo = tmp_path / "hf" / "models--meta-llama--Llama-3.1-70B-Instruct"
    _llama_folder(repo / "snapshots" / ("0" * 40), hidden=8192, inter=28672, layers=80, heads=64, kv=8)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    return work


def test_readme_commands_are_all_run_or_skipped_with_a_reason() -> None:
    commands = readme_commands(README.read_text())
    assert "airlock keys create alice --models smollm2,tiny-llama" in commands
    stale = [c for c in [*SKIPPED, *EXIT_CODES] if c not in commands]
    assert stale == [], "SKIPPED names commands the README no longer has"


def test_the_readme_runs_as_written(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from airlock.cli.main import run

    failures = []
    ran = 0
    for command in readme_commands(README.read_text()):
        if command in SKIPPED:
            continue
        try:
            run(shlex.split(command)[1:])
            code = 0
        except SystemExit as done:
            code = int(done.code or 0)
        ran += 1
        captured = capsys.readouterr()
        text = captured.out + captured.err
        wide = [line for line in text.splitlines() if set(line) & set("│┃┏┗└╭") and len(line) > WIDTH]
        if code != EXIT_CODES.get(command, 0) or "Traceback" in text or wide:
            failures.append(f"{command}\n  exit {code}; table lines over {WIDTH}: {len(wide)}\n{text}")
    assert ran >= 7
    assert failures == [], "\n".join(failures)
