"""What a deployment is, whatever renders it: the spec's engines as container services, and the gateway.

``build_deployment`` reads the spec, runs serve's start check (``apply_plan``: plan's engine
arguments filled in, a model plan rejects refused unless ``force``), builds each engine's argv with
the same adapters serve uses (``engines/llamacpp.py``, ``engines/vllm.py``) and maps their host paths
to the container's mounts, and finds every image in the store's index (where ``airlock install``
placed it: the internal registry by digest, else the docker tag it loaded). Renderers (compose,
Kubernetes) turn the :class:`Deployment` into files; they add no flag of their own.

Example::

    deployment = build_deployment(DeployOptions(spec=Path("airlock.yaml")))
    [e.name for e in deployment.engines]     # ['engine-smollm2']
    deployment.engines[0].command            # ('--model', '/store/gguf/SmolLM2....gguf', ...)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import yaml

from airlock.engines.base import OFFLINE_ENV
from airlock.errors import AirlockError, ConfigError, DeployError, StoreError
from airlock.settings import Settings
from airlock.spec import LlamaCppEngineSpec, ModelSpec, RemoteEngineSpec, Spec, VllmEngineSpec, load_spec
from airlock.store.db import StoreDb, StoredImage

#: Where the model store is mounted, read-only, in every engine container.
STORE_MOUNT = "/store"
#: Where a model file or folder outside the store is mounted (one per engine).
MODEL_MOUNT = "/model"
#: The port every engine listens on inside its own container (vLLM's image default).
ENGINE_PORT = 8000
#: airlock's own image (docs/image.md): its llama-server, its gateway port, its state folder and user.
LLAMA_SERVER_IN_IMAGE = "/opt/airlock/llama.cpp/bin/llama-server"
GATEWAY_PORT = 8080
STATE_DIR = "/var/lib/airlock"
GATEWAY_SPEC_PATH = "/etc/airlock/airlock.yaml"
RUN_UID = 10001
#: The variable that carries the internal key engines require (the gateway sends it upstream).
ENGINE_KEY_ENV = "AIRLOCK_ENGINE_KEY"
#: airlock's own image in the store: a repository whose last segment is this.
AIRLOCK_REPOSITORY = "airlock"
#: llama.cpp's shared memory needs are small: docker's default.
LLAMACPP_SHM = 64 * 1024 * 1024


@dataclass(frozen=True)
class Mount:
    """A host path bound read-only into an engine container."""

    source: Path
    target: str


@dataclass(frozen=True)
class EngineService:
    name: str  # DNS-safe service name, e.g. "engine-smollm2"
    model: str  # the model's name in the spec
    kind: Literal["vllm", "llamacpp"]
    image: (
        str  # pinned: HOST/repo@sha256:... from the internal registry, or the docker tag the store recorded
    )
    command: tuple[str, ...]  # the engine's arguments (after the entrypoint), plan's engine args exactly
    env: dict[str, str]  # the offline environment (HF_HUB_OFFLINE=1, ...), never a secret
    port: int  # the port it listens on inside the container
    health_path: str  # its health route (/health)
    gpus: int  # 0 on the CPU
    gpu_ids: tuple[str, ...]  # device ids ("0", "1"); empty: any
    shm_bytes: int | None  # shared memory it needs (None: ipc host)
    model_dir: str  # the model's path inside the container (under STORE_MOUNT or MODEL_MOUNT)
    startup_s: float  # the load-time budget (probes are sized from it)
    memory_bytes: int | None  # plan's memory figure for resource requests
    cpus: float | None
    entrypoint: tuple[str, ...] | None = None  # None: the image's own; else the binary to run
    mounts: tuple[Mount, ...] = ()  # read-only binds: the store, or the model outside it
    api_key_env: str = "LLAMA_API_KEY"  # the variable the engine reads its internal key from
    image_id: str | None = None  # the image's config digest (docker's image ID) when image is a tag
    aliases: tuple[str, ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        """The whole command line inside the container (the entrypoint when airlock sets one)."""
        return (*(self.entrypoint or ()), *self.command)


@dataclass(frozen=True)
class GatewayService:
    image: str  # airlock's own image, from the store
    port: int  # the one published port (the spec's gateway port)
    spec_yaml: str  # the gateway's airlock.yaml: each model an engine of kind remote pointing at its service
    container_port: int = GATEWAY_PORT
    state_dir: str = STATE_DIR  # keys.db and the audit log: a named volume
    spec_path: str = GATEWAY_SPEC_PATH  # where spec_yaml is mounted inside
    image_id: str | None = None
    host: str = "0.0.0.0"  # noqa: S104 - the address the published port binds on the host
    secret_env: tuple[str, ...] = ()  # variables the gateway reads keys from (remote models' api_key_env)


@dataclass(frozen=True)
class Deployment:
    name: str
    store: Path  # the model store on the host
    gateway: GatewayService
    engines: tuple[EngineService, ...]
    warnings: tuple[str, ...]
    engine_key_env: str = ENGINE_KEY_ENV


@dataclass(frozen=True)
class DeployOptions:
    spec: Path
    store: Path | None = None  # default: the spec's store, else airlock's default store
    force: bool = False  # render models plan rejects, and GPU counts the spec's hardware lacks
    gateway_image: str | None = None  # airlock's image as installed (a reference the store knows)
    name: str | None = None  # the project's name (default: the spec's folder)
    host_gpus: int | None = None  # GPUs on the host (default: nvidia-smi's count, if it runs here)
    settings: Settings | None = None
    environ: Mapping[str, str] = field(default_factory=dict)  # for the start check (VLLM_* overrides)


def build_deployment(options: DeployOptions) -> Deployment:
    """The spec as container services: checked by plan, every image found in the store."""
    from airlock.plan.apply import apply_plan

    settings = options.settings or Settings.from_env()
    spec = load_spec(options.spec)
    store = (options.store or spec.store or settings.store).resolve()
    warnings: list[str] = []
    spec, checks = apply_plan(spec, store=store, force=options.force, environ=options.environ)
    for check in checks:
        if check.plan is not None and check.plan.problems:
            warnings.append(f"model {check.model!r}: {check.message} (rendered with --force)")
    db = store_db(store)
    engines: list[EngineService] = []
    names: set[str] = set()
    next_gpu = 0
    for model in spec.models:
        if isinstance(model.engine, RemoteEngineSpec):
            continue
        name = service_name(model.name, names)
        names.add(name)
        if isinstance(model.engine, LlamaCppEngineSpec):
            engine = _llamacpp_service(model, model.engine, name, settings, store, db, options.gateway_image)
        else:
            gpus = _gpu_count(model.engine) if spec.hardware is not None else 0
            ids = tuple(str(i) for i in range(next_gpu, next_gpu + gpus))
            next_gpu += gpus
            engine = _vllm_service(model, model.engine, name, settings, store, db, gpus, ids)
        engines.append(engine)
    warnings += _gpu_warnings(spec, next_gpu, options)
    warnings += _path_warnings(engines)
    gateway_image, gateway_id = _gateway_image(db, store, options.gateway_image)
    gateway = GatewayService(
        image=gateway_image,
        port=spec.gateway.port,
        spec_yaml=gateway_spec_yaml(spec, {e.model: e for e in engines}),
        image_id=gateway_id,
        host=spec.gateway.host,
        secret_env=tuple(
            sorted(
                {
                    m.engine.api_key_env
                    for m in spec.models
                    if isinstance(m.engine, RemoteEngineSpec) and m.engine.api_key_env
                }
            )
        ),
    )
    project = options.name or options.spec.resolve().parent.name
    return Deployment(
        name=project_name(project),
        store=store,
        gateway=gateway,
        engines=tuple(engines),
        warnings=tuple(warnings),
    )


def service_name(model: str, taken: set[str]) -> str:
    """A DNS label (RFC 1123, at most 63) for a model's engine: ``engine-<model>``, unique."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"engine-{model.lower()}").strip("-")[:63].rstrip("-")
    name, n = base, 2
    while name in taken:
        suffix = f"-{n}"
        name, n = base[: 63 - len(suffix)].rstrip("-") + suffix, n + 1
    return name


def project_name(name: str) -> str:
    """A compose project name (lower case letters, digits, '-' and '_'): the spec's folder."""
    cleaned = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")
    return cleaned or "airlock"


def store_db(store: Path) -> StoreDb:
    from airlock.store.store import Store

    if not (store / ".airlock").exists():
        raise StoreError(
            f"{store} is not an airlock store",
            hint="install a bundle with `airlock install DIR --store STORE`, or name the store with --store",
        )
    return Store(store).load_db()


def _gpu_count(engine: VllmEngineSpec) -> int:
    return (engine.tensor_parallel_size or 1) * (engine.pipeline_parallel_size or 1)


def _gpu_warnings(spec: Spec, needed: int, options: DeployOptions) -> list[str]:
    """The GPUs the engines take against the spec's hardware (an error unless force) and the host's."""
    out: list[str] = []
    if needed and spec.hardware is not None and needed > spec.hardware.count:
        message = (
            f"the engines take {needed} GPUs; the spec's hardware has {spec.hardware.count} "
            "(one device each for tensor x pipeline parallel size)"
        )
        if not options.force:
            raise ConfigError(message, hint="lower tensor_parallel_size, or --force to render it anyway")
        out.append(message + " (rendered with --force)")
    host = options.host_gpus if options.host_gpus is not None else host_gpu_count()
    if needed and host is not None and needed > host:
        out.append(f"this host has {host} GPUs, the engines take {needed}: start it on the site's GPU host")
    return out


def host_gpu_count() -> int | None:
    """GPUs nvidia-smi lists here; None when it is not installed or does not answer."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return sum(1 for line in done.stdout.splitlines() if line.startswith("GPU "))


def _path_warnings(engines: Sequence[EngineService]) -> list[str]:
    """Host paths in the spec's own ``args`` are not mapped into the container: say so."""
    out = []
    for engine in engines:
        for arg in engine.command:
            if arg.startswith("/") and not arg.startswith((STORE_MOUNT, MODEL_MOUNT)):
                out.append(f"{engine.name}: argument {arg} is a host path; the container does not see it")
    return out


# -- images ------------------------------------------------------------------------------------------


def _find_image(db: StoreDb, reference: str) -> StoredImage | None:
    for image in db.images:
        if reference in (
            image.reference,
            f"{image.repository}:{image.tag}",
            f"{image.repository}@{image.digest}",
        ):
            return image
    return None


def _config_digest(store: Path, image: StoredImage) -> str | None:
    """The image's config digest (docker's image ID after ``docker load``), read from the store's copy."""
    from airlock.store.store import Store

    try:
        manifest = json.loads(Store(store).image_blob(image.digest.removeprefix("sha256:")).read_bytes())
        digest = manifest["config"]["digest"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return digest if isinstance(digest, str) else None


def image_for(db: StoreDb, store: Path, reference: str, what: str) -> tuple[str, str | None]:
    """Where ``airlock install`` placed ``reference``: the registry's reference by digest (no ID needed),
    else the docker tag and the image ID it must have. A clear error when it was never installed."""
    image = _find_image(db, reference)
    if image is None:
        raise DeployError(
            f"{what}: image {reference} is not in the store {store}",
            hint="list it in the spec's images:, pack it, and install the bundle with "
            "`airlock install DIR --registry HOST:PORT` (or --docker)",
        )
    location = db.image_location(reference)
    if location is None:
        raise DeployError(
            f"{what}: image {reference} is in the store but in no registry or docker daemon",
            hint="place it with `airlock install DIR --registry HOST:PORT` (or --docker)",
        )
    if "@sha256:" in location:
        return location, None
    return location, _config_digest(store, image)


def named_image(
    db: StoreDb, store: Path, reference: str | None, repository: str, what: str, option: str
) -> tuple[str, str | None]:
    """An image by the reference given, else the store's newest installed image whose repository's
    last segment is ``repository`` (``airlock``, ``prometheus``): how deploy finds its own images."""
    if reference is not None:
        return image_for(db, store, reference, what)
    found = [i for i in db.images if i.repository.rsplit("/", 1)[-1] == repository and i.targets]
    if not found:
        raise DeployError(
            f"{what}: no image named {repository} is installed in the store {store}",
            hint="list it in the spec's images:, pack it and install the bundle with "
            f"`airlock install DIR --registry HOST:PORT` (or --docker); or name it with {option}",
        )
    newest = max(found, key=lambda i: i.installed)
    return image_for(db, store, newest.reference, what)


def _gateway_image(db: StoreDb, store: Path, reference: str | None) -> tuple[str, str | None]:
    """airlock's own image (``airlock image build``): the one named, else the store's newest airlock."""
    return named_image(db, store, reference, AIRLOCK_REPOSITORY, "airlock's own image", "--gateway-image")


# -- engines -----------------------------------------------------------------------------------------


def _map_path(host: Path, store: Path) -> tuple[str, Mount]:
    """A model path on the host as the container sees it: under the store's mount, else its own."""
    resolved = host.absolute()
    if resolved.is_relative_to(store):
        rel = resolved.relative_to(store).as_posix()
        return f"{STORE_MOUNT}/{rel}", Mount(store, STORE_MOUNT)
    inside = str(PurePosixPath(MODEL_MOUNT) / resolved.name) if resolved.is_file() else MODEL_MOUNT
    return inside, Mount(resolved, inside)


def _replace_value(argv: list[str], flag: str, value: str) -> None:
    """Set the value after ``flag`` (the adapters' own flags: --host, --port, --model)."""
    at = argv.index(flag)
    argv[at + 1] = value


def _llamacpp_service(
    model: ModelSpec,
    engine: LlamaCppEngineSpec,
    name: str,
    settings: Settings,
    store: Path,
    db: StoreDb,
    gateway_image: str | None,
) -> EngineService:
    """llama-server from airlock's own image, with the argv serve's adapter builds."""
    from airlock.engines.llamacpp import llamacpp_engine
    from airlock.store.resolve import resolve_gguf

    gguf = resolve_gguf(model, store)
    # The adapter locates a llama-server on this host; the container runs the image's own. Any
    # executable stands in (this Python), and argv[0] is replaced.
    stand_in = engine.model_copy(update={"binary": Path(sys.executable)})
    config = llamacpp_engine(model, stand_in, settings, port=ENGINE_PORT, api_key="", store=store)
    assert config.launch is not None
    argv = list(config.launch.argv[1:])
    inside, mount = _map_path(gguf, store)
    _replace_value(argv, "--model", inside)
    _replace_value(argv, "--host", "0.0.0.0")  # noqa: S104 - the container's own network namespace
    image, image_id = _gateway_image(db, store, gateway_image)
    return EngineService(
        name=name,
        model=model.name,
        kind="llamacpp",
        image=image,
        command=tuple(argv),
        env={**engine.env, **OFFLINE_ENV},
        port=ENGINE_PORT,
        health_path=config.health_path or "/health",
        gpus=0,
        gpu_ids=(),
        shm_bytes=LLAMACPP_SHM,
        model_dir=inside,
        startup_s=engine.startup_timeout_s,
        memory_bytes=_llamacpp_memory(gguf, engine),
        cpus=float(engine.threads) if engine.threads is not None else None,
        entrypoint=(LLAMA_SERVER_IN_IMAGE,),
        mounts=(mount,),
        api_key_env="LLAMA_API_KEY",
        image_id=image_id,
        aliases=tuple(model.aliases),
    )


def _llamacpp_memory(gguf: Path, engine: LlamaCppEngineSpec) -> int | None:
    """llama.cpp's plan: the GGUF mapped whole plus its KV cache (None when the file cannot be read)."""
    from airlock.plan.facts import read_facts
    from airlock.plan.llamacpp import llamacpp_options, plan_llamacpp

    try:
        facts = read_facts(gguf)
        result = plan_llamacpp(
            facts, llamacpp_options(engine.ctx_size, engine.parallel, engine.args), ram_bytes=0
        )
    except AirlockError:
        return None
    return result.file_bytes + result.kv_bytes


def _vllm_service(
    model: ModelSpec,
    engine: VllmEngineSpec,
    name: str,
    settings: Settings,
    store: Path,
    db: StoreDb,
    gpus: int,
    gpu_ids: tuple[str, ...],
) -> EngineService:
    """The vllm/vllm-openai image with the flags serve's adapter passes after the image."""
    from airlock.engines.vllm import vllm_engine
    from airlock.store.resolve import store_env

    if engine.image is None:
        raise ConfigError(
            f"model {model.name!r}: a vLLM engine needs engine.image to run in a container",
            hint="set engine.image to the vllm/vllm-openai image the bundle carries (e.g. vllm/vllm-openai:v0.11.0)",
        )
    image, image_id = image_for(db, store, engine.image, f"model {model.name!r}")
    config = vllm_engine(model, engine, settings, port=ENGINE_PORT, api_key="", store=store)
    assert config.launch is not None
    argv = list(config.launch.argv)
    volume = argv[argv.index("--volume") + 1]
    source, target, _ = volume.rsplit(":", 2)
    command = argv[argv.index(image) + 1 :]
    model_dir = command[command.index("--model") + 1]
    env = {**(store_env(Path(STORE_MOUNT)) if target == STORE_MOUNT else {}), **engine.env, **OFFLINE_ENV}
    return EngineService(
        name=name,
        model=model.name,
        kind="vllm",
        image=image,
        command=tuple(command),
        env=env,
        port=ENGINE_PORT,
        health_path=config.health_path or "/health",
        gpus=gpus,
        gpu_ids=gpu_ids,
        shm_bytes=None,
        model_dir=model_dir,
        startup_s=engine.startup_timeout_s,
        memory_bytes=None,
        cpus=None,
        entrypoint=None,
        mounts=(Mount(Path(source), target),),
        api_key_env="VLLM_API_KEY",
        image_id=image_id,
        aliases=tuple(model.aliases),
    )


# -- the gateway's spec ------------------------------------------------------------------------------


def gateway_spec_yaml(spec: Spec, engines: Mapping[str, EngineService]) -> str:
    """The gateway container's airlock.yaml: the spec's gateway settings, each engine a remote URL.

    Remote models of the spec stay as they are. The audit log, when the spec keeps one, goes to the
    state volume."""
    # only what the spec sets: an image of an older airlock reads it (it refuses keys it does not know)
    gateway = spec.gateway.model_dump(mode="json", exclude={"audit_log"}, exclude_defaults=True)
    gateway.update(host="0.0.0.0", port=GATEWAY_PORT)  # noqa: S104 - inside its container
    if spec.gateway.audit_log is not None:
        gateway["audit_log"] = f"{STATE_DIR}/audit.jsonl"
    models: list[dict[str, object]] = []
    for model in spec.models:
        entry: dict[str, object] = {"name": model.name}
        if model.aliases:
            entry["aliases"] = list(model.aliases)
        service = engines.get(model.name)
        if service is None:
            entry["engine"] = model.engine.model_dump(mode="json", exclude_defaults=True)
        else:
            entry["engine"] = {
                "kind": "remote",
                "url": f"http://{service.name}:{service.port}/v1",
                "api_key_env": ENGINE_KEY_ENV,
                "startup_timeout_s": service.startup_s,
            }
        models.append(entry)
    data = {"version": 1, "gateway": gateway, "models": models}
    Spec.model_validate(data)  # what the gateway will read must load
    text: str = yaml.safe_dump(data, sort_keys=False)
    return text
