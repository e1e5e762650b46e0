"""``airlock signing-key create | pack | verify | install | rebuild``: the crossing, on both sides.

Keys: ``signing-key create`` writes ``$AIRLOCK_HOME/signing/airlock.key`` (and ``.pub``) unless told otherwise;
``pack`` signs with that key when ``--sign`` is not given, and refuses to pack unsigned without
``--no-sign`` (secure by default). ``verify`` and ``install`` trust the keys given with ``--trust``,
else every ``*.pub`` in ``$AIRLOCK_HOME/trusted/``.

Results go to stdout (``out``), progress, warnings and notes to stderr (``err``). Every path, name
and message from the disk is escaped for rich markup, and every line holding a path or a command is
printed with ``soft_wrap`` (never broken, so it pastes whole); commands are shell-quoted. The bundle code
(cryptography, zstandard, zfec, huggingface_hub) is imported inside each command, so ``airlock
--help`` does not load it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from airlock.cli.output import err, out
from airlock.common.threads import default_workers
from airlock.errors import ConfigError, MissingVolumeError
from airlock.settings import Settings

if TYPE_CHECKING:
    from airlock.bundle.airgap.install import InstallResult
    from airlock.bundle.airgap.verify import VerifyReport
    from airlock.bundle.format.reader import VolumeSet
    from airlock.bundle.staging.pack import Compression

DEFAULT_WORKERS = default_workers()

TrustOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--trust", help="A public key to trust (repeatable; default: every *.pub in $AIRLOCK_HOME/trusted)."
    ),
]
UnsignedOpt = Annotated[
    bool, typer.Option("--allow-unsigned", help="Accept a bundle without a (trusted) signature: hashes only.")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON (the exit code is the same).")
]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Threads hashing and copying.")]


def keygen(
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Private key file (default: airlock.key in $AIRLOCK_HOME/signing)."),
    ] = None,
    comment: Annotated[str, typer.Option(help="A comment kept in the public key line.")] = "airlock",
) -> None:
    """Write an Ed25519 key pair: KEY signs bundles (keep it on staging), KEY.pub is trusted on the other side."""
    from airlock.bundle.format.sign import generate_keypair

    settings = Settings.from_env()
    keys = generate_keypair(out_path or settings.signing_key, comment=comment)
    out.print(
        f"key [bold]{escape(keys.key_id)}[/]: private {escape(str(keys.private))} (mode 600), "
        f"public {escape(str(keys.public))}",
        soft_wrap=True,
    )
    out.print(
        f"[dim]on the air-gapped side: cp {escape(keys.public.name)} $AIRLOCK_HOME/trusted/  "
        f"(or --trust {escape(keys.public.name)})[/]",
        soft_wrap=True,
    )


def _signing_key(sign_key: Path | None, no_sign: bool, settings: Settings) -> Path | None:
    """The key pack signs with: --sign, else the default key; neither is an error unless --no-sign."""
    if sign_key is not None and no_sign:
        raise ConfigError("--sign and --no-sign: choose one")
    if no_sign:
        return None
    if sign_key is not None:
        return sign_key
    if settings.signing_key.exists():
        return settings.signing_key
    raise ConfigError(
        f"no signing key at {settings.signing_key}: bundles are signed unless you say --no-sign",
        hint="make one with `airlock signing-key create`, or pack unsigned with --no-sign",
    )


def pack_cmd(
    spec: Annotated[Path, typer.Argument(help="The spec (airlock.yaml) listing models, wheels and files.")],
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the bundle (one vol-NNNN/ per volume).")
    ],
    volume_size: Annotated[
        str | None,
        typer.Option("--volume-size", help="Most bytes per volume: 4G (FAT32), 25G (Blu-ray), 1T."),
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option("--sign", help="Private key (default: the `signing-key create` one)."),
    ] = None,
    no_sign: Annotated[
        bool, typer.Option("--no-sign", help="Do not sign (verify then needs --allow-unsigned).")
    ] = False,
    base: Annotated[
        Path | None,
        typer.Option(
            "--base", help="An earlier manifest.json or a store's inventory.json: carry only what it lacks."
        ),
    ] = None,
    trust: TrustOpt = None,
    parity: Annotated[
        float,
        typer.Option(
            "--parity",
            min=0,
            max=100,
            help="Reed-Solomon parity, as a percent of the data volumes (rounded up to whole volumes).",
        ),
    ] = 0.0,
    compress: Annotated[
        str, typer.Option("--compress", help="none | zstd | auto (zstd where it saves at least 10%).")
    ] = "none",
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Carry pickle-based weights (.bin .pt .pth .ckpt .pkl).")
    ] = False,
    hf_endpoint: Annotated[
        str | None, typer.Option("--hf-endpoint", help="The Hub (default: HF_ENDPOINT or huggingface.co).")
    ] = None,
    hf_cache: Annotated[
        Path | None,
        typer.Option("--hf-cache", help="huggingface_hub's cache to download into (default: its own)."),
    ] = None,
    platform: Annotated[
        str,
        typer.Option(
            "--platform", help="Images: the OS/ARCH or OS/ARCH/VARIANT taken from a multi-platform index."
        ),
    ] = "linux/amd64",
    with_airlock: Annotated[
        bool | None,
        typer.Option(
            "--with-airlock/--without-airlock",
            help="Carry airlock itself (its wheels and a bootstrap script on the first volume) for the "
            "wheels' target (default: when the spec's wheels name a platform).",
            show_default=False,
        ),
    ] = None,
    airlock_wheel: Annotated[
        Path | None,
        typer.Option("--airlock-wheel", help="airlock's wheel to carry (default: built from this checkout)."),
    ] = None,
    workers: WorkersOpt = DEFAULT_WORKERS,
) -> None:
    """Pack the spec's models, wheels, files and container images into a signed bundle of volumes.

    Signed with --sign KEY, else with the key `airlock signing-key create` made; with neither, pack stops (exit 2) unless --no-sign.
    """
    from airlock.bundle.staging.pack import PackOptions, pack
    from airlock.cli.bundle_render import RichProgress, image_line, rate
    from airlock.common.fileio import human
    from airlock.common.types import parse_size
    from airlock.common.words import counted

    settings = Settings.from_env()
    if compress not in ("none", "zstd", "auto"):
        raise ConfigError(f"--compress {compress!r}: choose none, zstd or auto")
    size = parse_size("--volume-size", volume_size) if volume_size else None
    key = _signing_key(sign_key, no_sign, settings)
    started = time.monotonic()
    with RichProgress(err) as progress:
        result = pack(
            PackOptions(
                spec_path=spec,
                out=out_dir,
                volume_size=size,
                sign_key=key,
                base=base,
                trust=tuple(trust or ()),
                allow_pickle=allow_pickle,
                parity_percent=parity,
                compress=_compression(compress),
                workers=workers,
                hf_endpoint=hf_endpoint,
                hf_cache=hf_cache,
                platform=platform,
                with_airlock=with_airlock,
                airlock_wheel=airlock_wheel,
                progress=progress,
            )
        )
    took = time.monotonic() - started
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    out.print(
        f"bundle [bold]{result.bundle[:16]}[/]: {counted(result.files, 'file')}, {counted(result.blobs, 'blob')}, "
        f"{human(result.carried_bytes)} carried on {counted(len(result.volumes), 'volume')}, "
        f"{rate(result.written_bytes, took)}",
        soft_wrap=True,
    )
    if result.skipped_blobs:
        out.print(
            f"  left out {counted(result.skipped_blobs, 'blob')} ({human(result.skipped_bytes)}) "
            "the other side holds (--base)",
            soft_wrap=True,
        )
    if result.kept_bytes:
        earlier = (
            "already there from an earlier run"
            if result.earlier_finished
            else "written by an earlier, interrupted run"
        )
        out.print(f"  kept {human(result.kept_bytes)} {earlier} (re-hashed: unchanged)", soft_wrap=True)
    for v in result.volumes:
        out.print(
            f"  {escape(str(v.path))}  {v.role:6}  {human(v.bytes):>10}  {counted(v.entries, 'entry', 'entries')}",
            soft_wrap=True,
        )
    for artifact in result.manifest.artifacts:
        if artifact.image is not None:
            out.print(f"  image {image_line(artifact.image)}", soft_wrap=True)
    if result.signed_by:
        out.print(f"  signed by key {escape(result.signed_by)}", soft_wrap=True)
    else:
        out.print(
            "  [yellow]unsigned[/] (--no-sign): verify and install need --allow-unsigned", soft_wrap=True
        )
    if result.bootstrap is not None:
        from airlock.cli.bundle_render import bootstrap_lines

        for line in bootstrap_lines(result.bootstrap, result.volumes[0].path):
            out.print(line, soft_wrap=True)


def _compression(value: str) -> Compression:
    if value == "zstd":
        return "zstd"
    if value == "auto":
        return "auto"
    return "none"


@contextlib.contextmanager
def _reading(
    dirs: list[Path], trust: list[Path] | None, allow_unsigned: bool, workers: int
) -> Iterator[VolumeSet]:
    """The volumes verify, install and rebuild read (the keys given, else the trusted folder's),
    with progress bars on stderr while the command runs."""
    from airlock.bundle.format.reader import VolumeSet
    from airlock.cli.bundle_render import RichProgress

    trusted = Settings.from_env().trusted_keys(trust)
    with RichProgress(err) as progress:
        yield VolumeSet(
            dirs, trust=trusted, allow_unsigned=allow_unsigned, workers=workers, progress=progress
        )


def _notes(notes: list[str]) -> None:
    for note in notes:
        err.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)


def verify_cmd(
    dirs: Annotated[
        list[Path], typer.Argument(help="Volumes (where each is mounted) or the folder pack wrote.")
    ],
    trust: TrustOpt = None,
    allow_unsigned: UnsignedOpt = False,
    partial: Annotated[
        bool,
        typer.Option(
            "--partial", help="Check only the volumes given (one stick at a time): missing ones are fine."
        ),
    ] = False,
    workers: WorkersOpt = DEFAULT_WORKERS,
    as_json: JsonOpt = False,
) -> None:
    """Check a bundle: signature, every blob's hash, no unlisted file, no link; report each volume.

    Exit codes:
     0  intact and complete
    11  not a bundle
    12  no trusted signature
    13  unsafe path (a link, .., /)
    14  corrupt or truncated
    15  a file the manifest does not list
    16  volumes missing (those present are intact)
    """
    from airlock.bundle.airgap.verify import VerifyOptions, verify
    from airlock.cli.bundle_render import PROBLEM_WORDS, command, rate, trust_args, verify_lines
    from airlock.common.words import numbers

    with _reading(dirs, trust, allow_unsigned, workers) as volumes:
        report = verify(VerifyOptions(volumes, partial=partial))
    if as_json:
        typer.echo(json.dumps(_verify_json(report), indent=2))
        report.raise_for_problems()
        return
    for line in verify_lines(report):
        out.print(line, soft_wrap=True)
    _notes(report.notes)
    for p in report.problems:
        err.print(f"[red]{PROBLEM_WORDS.get(p.kind, p.kind)}:[/] {escape(p.message)}", soft_wrap=True)
    if report.manifest.parity is not None and (report.missing or report.corrupt_volumes()):
        lost = sorted(set(report.missing) | set(report.corrupt_volumes()))
        if len(lost) <= report.manifest.parity.parity_volumes:
            again = command(
                "airlock", "rebuild", *dirs, *(a for n in lost for a in ("--volume", str(n))),
                "--out", "NEW_FOLDER", *trust_args(trust, allow_unsigned),
            )  # fmt: skip
            err.print(f"[bold]parity can rebuild {numbers(lost)}:[/] {again}", soft_wrap=True)
    signer = f"signed by key {escape(report.signed_by)}" if report.signed_by else "not signature-checked"
    out.print(f"{signer}; {rate(report.checked_bytes, report.seconds)} hashed", soft_wrap=True)
    report.raise_for_problems()
    out.print("[bold green]bundle verified[/]")


def _verify_json(report: VerifyReport) -> dict[str, object]:
    from airlock.cli.bundle_render import volume_states

    return {
        "bundle": report.bundle,
        "ok": report.ok,
        "signed_by": report.signed_by,
        "volumes": [
            {"number": n, "role": role, "state": state, "path": str(where) if where else None}
            for n, role, state, where in volume_states(report)
        ],
        "missing": report.missing,
        "problems": [
            {"kind": p.kind, "volume": p.volume, "path": p.path, "message": p.message, "files": list(p.files)}
            for p in report.problems
        ],
        "notes": report.notes,
        "checked_bytes": report.checked_bytes,
        "seconds": round(report.seconds, 3),
    }


def install_cmd(
    dirs: Annotated[
        list[Path], typer.Argument(help="Volumes as mounted (any subset; run again for the rest).")
    ],
    store: Annotated[
        Path | None, typer.Option("--store", help="The model store (default: $AIRLOCK_HOME/store).")
    ] = None,
    trust: TrustOpt = None,
    allow_unsigned: UnsignedOpt = False,
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            help="Push the images to this registry: HOST:PORT (https) or http://HOST:PORT; "
            "AIRLOCK_REGISTRY_USERNAME/_PASSWORD.",
        ),
    ] = None,
    registry_tls_verify: Annotated[
        str, typer.Option("--registry-tls-verify", help="false: do not check its certificate.")
    ] = "true",
    registry_ca_file: Annotated[
        Path | None,
        typer.Option(
            "--registry-ca-file", help="A PEM file of the CA that signed the registry's certificate."
        ),
    ] = None,
    docker: Annotated[bool, typer.Option("--docker", help="Load the images into docker.")] = False,
    docker_host: Annotated[
        str | None,
        typer.Option(
            "--docker-host", help="The daemon for --docker (default: DOCKER_HOST or the local socket)."
        ),
    ] = None,
    oci_dir: Annotated[
        Path | None,
        typer.Option("--oci", help="Write the images as an OCI layout here."),
    ] = None,
    workers: WorkersOpt = DEFAULT_WORKERS,
    as_json: JsonOpt = False,
) -> None:
    """Verify a bundle and install it into the model store (Hugging Face cache layout), straight from its volumes.

    Container images go into the store's OCI layout, and from there to --registry, --docker and --oci.

    Exit codes:
     0  installed
    11  not a bundle
    12  no trusted signature
    13  unsafe path (a link, .., /)
    14  corrupt or truncated: nothing installed
    15  a file the manifest does not list
    16  volumes still to mount (what they held is kept)
    19  the store's disk is full
    20  the store is locked, or lacks what a delta needs
    """
    from airlock.bundle.airgap.images import ImageTargets
    from airlock.bundle.airgap.install import InstallOptions, install
    from airlock.cli.bundle_render import command, rate
    from airlock.common.fileio import human
    from airlock.common.words import counted, numbers
    from airlock.registry.push import RegistryTarget

    started = time.monotonic()
    targets = ImageTargets(
        registry=RegistryTarget(registry, tls_verify=_yes(registry_tls_verify), ca_file=registry_ca_file)
        if registry
        else None,
        docker=docker,
        docker_host=docker_host,
        oci=oci_dir,
    )
    with _reading(dirs, trust, allow_unsigned, workers) as volumes:
        result = install(
            InstallOptions(
                volumes, store=store or Settings.from_env().store, images=targets, progress=volumes.progress
            )
        )
    took = time.monotonic() - started
    missing = MissingVolumeError(
        f"mount {numbers(result.needed)} and run the same command again",
        hint="what is installed so far is kept and verified",
    )
    if as_json:
        typer.echo(json.dumps(_install_json(result), indent=2))
        if not result.complete:
            raise missing
        return
    _notes(result.notes)
    copied = rate(result.copied_bytes, took)
    if not result.complete:
        out.print(
            f"installed what {numbers(result.mounted)} {'holds' if len(result.mounted) == 1 else 'hold'}: {copied}"
        )
        raise missing
    out.print(
        f"[bold green]installed[/] bundle {result.bundle[:16]} into {escape(str(result.store))}: {copied}",
        soft_wrap=True,
    )
    if result.reused_bytes:
        out.print(f"  {human(result.reused_bytes)} were already in the store and were not copied again")
    for m in result.models:
        out.print(
            f"  model [bold]{escape(m.name)}[/]: {escape(m.repo)}@{m.commit[:12]}  {escape(str(m.path))}",
            soft_wrap=True,
        )
    if result.wheels:
        pip = command("pip", "install", "--no-index", "--find-links", result.store / "wheels")
        out.print(f"  {counted(len(result.wheels), 'wheel')}: {pip} ...", soft_wrap=True)
    if result.files:
        where = escape(str(result.store / "files"))
        out.print(f"  {counted(len(result.files), 'file')} under {where}/", soft_wrap=True)
    for placed in result.images:
        where = ", ".join(f"{t.kind} {t.reference}" for t in placed.targets) or "the store only"
        pushed = (
            f" ({placed.pushed_blobs} blobs pushed, {placed.skipped_blobs} already there)"
            if placed.pushed_blobs or placed.skipped_blobs
            else ""
        )
        out.print(
            f"  image [bold]{escape(placed.reference)}[/] {placed.digest[:19]}: {escape(where)}{pushed}",
            soft_wrap=True,
        )
    if result.spec_path:
        serve = command("airlock", "serve", "--config", result.spec_path)
        out.print(f"serve them: [bold]{serve}[/]", soft_wrap=True)


def _yes(value: str) -> bool:
    """``true``/``false`` (as skopeo's ``--tls-verify=false``)."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"--registry-tls-verify {value!r}: say true or false")


def _install_json(result: InstallResult) -> dict[str, object]:
    return {
        "bundle": result.bundle,
        "complete": result.complete,
        "store": str(result.store),
        "signed_by": result.signed_by,
        "mounted": result.mounted,
        "needed": result.needed,
        "copied_bytes": result.copied_bytes,
        "reused_bytes": result.reused_bytes,
        "models": [
            {"name": m.name, "repo": m.repo, "commit": m.commit, "path": str(m.path)} for m in result.models
        ],
        "wheels": result.wheels,
        "files": result.files,
        "spec_path": str(result.spec_path) if result.spec_path else None,
        "notes": result.notes,
        "images": [
            {
                "reference": i.reference,
                "digest": i.digest,
                "targets": [t.model_dump() for t in i.targets],
                "pushed_blobs": i.pushed_blobs,
                "skipped_blobs": i.skipped_blobs,
                "bytes_sent": i.bytes_sent,
            }
            for i in result.images
        ],
    }


def rebuild_cmd(
    dirs: Annotated[
        list[Path], typer.Argument(help="The volumes still at hand (at least as many as data volumes).")
    ],
    volume: Annotated[
        list[int],
        typer.Option(
            "--volume",
            min=1,
            help="The number of a volume to rebuild (repeatable, up to the parity volumes).",
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where to write them (a vol-NNNN/ for each).")],
    trust: TrustOpt = None,
    allow_unsigned: UnsignedOpt = False,
    workers: WorkersOpt = DEFAULT_WORKERS,
) -> None:
    """Rebuild lost or damaged volumes from the others and the parity volumes (pack --parity).

    Exit codes:
     0  rebuilt, and checked against the manifest
    10  no parity, more volumes than parity volumes, too few intact volumes, or --out not empty
    11  not a bundle
    12  no trusted signature
    14  the rebuilt volume does not match the manifest
    19  the disk is full
    """
    from airlock.bundle.airgap.rebuild import RebuildOptions, rebuild
    from airlock.cli.bundle_render import command, rate, trust_args
    from airlock.common.words import numbers

    started = time.monotonic()
    with _reading(dirs, trust, allow_unsigned, workers) as volumes:
        result = rebuild(RebuildOptions(volumes, volume=tuple(volume), out=out_dir))
    speed = rate(result.bytes, time.monotonic() - started)
    if len(result.rebuilt) == 1:
        (one,) = result.rebuilt
        where = f"volume {one.number} at {escape(str(one.path))}"
        out.print(f"[bold green]rebuilt[/] {where} from {numbers(result.used)}: {speed}", soft_wrap=True)
    else:
        rebuilt = numbers(v.number for v in result.rebuilt)
        out.print(f"[bold green]rebuilt[/] {rebuilt} from {numbers(result.used)}: {speed}", soft_wrap=True)
        for v in result.rebuilt:
            out.print(f"  volume {v.number} at {escape(str(v.path))}", soft_wrap=True)
    paths = [v.path for v in result.rebuilt]
    check = command("airlock", "verify", "--partial", *paths, *trust_args(trust, allow_unsigned))
    out.print(f"[dim]check it: {check}[/]", soft_wrap=True)
