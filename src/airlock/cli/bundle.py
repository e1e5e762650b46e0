"""``airlock signing-key create | pack | verify | install | rebuild``: the crossing, on both sides.

Keys: ``signing-key create`` writes ``$AIRLOCK_HOME/signing/airlock.key`` (and ``.pub``) unless told otherwise;
``pack`` signs with that key when ``--sign`` is not given and it exists. ``verify`` and ``install``
trust the keys given with ``--trust``, else every ``*.pub`` in ``$AIRLOCK_HOME/trusted/``.

Results go to stdout (``out``), progress, warnings and notes to stderr (``err``). The bundle code
(cryptography, zstandard, zfec, huggingface_hub) is imported inside each command, so ``airlock
--help`` does not load it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from airlock.cli.output import err, out
from airlock.common.threads import default_workers
from airlock.errors import ConfigError, MissingVolumeError
from airlock.settings import Settings

if TYPE_CHECKING:
    from airlock.bundle.format.reader import VolumeSet
    from airlock.bundle.staging.pack import Compression

DEFAULT_WORKERS = default_workers()

TrustOpt = Annotated[
    list[Path] | None,
    typer.Option("--trust", help="A public key to trust (repeatable; default: $AIRLOCK_HOME/trusted/*.pub)."),
]
UnsignedOpt = Annotated[
    bool, typer.Option("--allow-unsigned", help="Accept a bundle without a (trusted) signature: hashes only.")
]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Threads hashing and copying.")]


def parse_size(value: str) -> int:
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        size = int(TypeAdapter(ByteSize).validate_python(value))
    except ValidationError as exc:
        raise ConfigError(f"--volume-size {value!r}: not a size (e.g. 4G, 25G, 1T, 700MiB)") from exc
    if size <= 0:
        raise ConfigError(f"--volume-size {value!r}: must be more than 0")
    return size


def keygen(
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="Private key file (default: $AIRLOCK_HOME/signing/airlock.key)."),
    ] = None,
    comment: Annotated[str, typer.Option(help="A comment kept in the public key line.")] = "airlock",
) -> None:
    """Write an Ed25519 key pair: KEY signs bundles (keep it on staging), KEY.pub is trusted on the other side."""
    from airlock.bundle.format.sign import generate_keypair

    settings = Settings.from_env()
    keys = generate_keypair(out_path or settings.signing_key, comment=comment)
    out.print(f"key [bold]{keys.key_id}[/]: private {keys.private} (mode 600), public {keys.public}")
    out.print(
        f"[dim]on the air-gapped side: cp {keys.public.name} $AIRLOCK_HOME/trusted/  (or --trust {keys.public.name})[/]"
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
        typer.Option("--sign", help="Private key (default: $AIRLOCK_HOME/signing/airlock.key if it exists)."),
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
    workers: WorkersOpt = DEFAULT_WORKERS,
) -> None:
    """Pack the spec's models, wheels and files into a signed bundle of volumes."""
    from airlock.bundle.staging.pack import PackOptions, pack
    from airlock.cli.bundle_render import RichProgress, rate
    from airlock.common.fileio import human

    settings = Settings.from_env()
    if compress not in ("none", "zstd", "auto"):
        raise ConfigError(f"--compress {compress!r}: choose none, zstd or auto")
    key = None if no_sign else (sign_key or (settings.signing_key if settings.signing_key.exists() else None))
    started = time.monotonic()
    with RichProgress(err) as progress:
        result = pack(
            PackOptions(
                spec_path=spec,
                out=out_dir,
                volume_size=parse_size(volume_size) if volume_size else None,
                sign_key=key,
                base=base,
                trust=tuple(trust or ()),
                allow_pickle=allow_pickle,
                parity_percent=parity,
                compress=_compression(compress),
                workers=workers,
                hf_endpoint=hf_endpoint,
                hf_cache=hf_cache,
                progress=progress,
            )
        )
    took = time.monotonic() - started
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    out.print(
        f"bundle [bold]{result.bundle[:16]}[/]: {result.files} files, {result.blobs} blobs, "
        f"{human(result.carried_bytes)} carried on {len(result.volumes)} volume(s), {rate(result.written_bytes, took)}"
    )
    if result.skipped_blobs:
        out.print(
            f"  left out {result.skipped_blobs} blobs ({human(result.skipped_bytes)}) the other side holds (--base)"
        )
    if result.kept_bytes:
        out.print(f"  kept {human(result.kept_bytes)} written by an earlier, interrupted run")
    for v in result.volumes:
        out.print(f"  {v.path}  {v.role:6}  {human(v.bytes):>10}  {v.entries} entries")
    out.print(f"  signed by key {result.signed_by}" if result.signed_by else "  [yellow]unsigned[/]")


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
) -> None:
    """Check a bundle: signature, every blob's hash, no unlisted file, no link; report each volume.

    Exit codes: 0 intact and complete, 11 not a bundle, 12 signature, 13 unsafe path, 14 corrupt,
    15 unlisted file, 16 volumes missing (those present are intact).
    """
    from airlock.bundle.airgap.verify import VerifyOptions, verify
    from airlock.cli.bundle_render import rate, verify_table

    with _reading(dirs, trust, allow_unsigned, workers) as volumes:
        report = verify(VerifyOptions(volumes, partial=partial))
    out.print(verify_table(report))
    for note in report.notes:
        err.print(f"[yellow]note:[/] {note}")
    for p in report.problems:
        err.print(f"[red]{p.kind}:[/] {p.message}")
    if report.manifest.parity is not None and (report.missing or report.corrupt_volumes()):
        lost = sorted(set(report.missing) | set(report.corrupt_volumes()))
        if len(lost) <= report.manifest.parity.parity_volumes:
            err.print(
                f"[bold]parity can rebuild volume(s) {', '.join(map(str, lost))}:[/] "
                f"airlock rebuild {' '.join(map(str, dirs))} --volume {lost[0]} --out NEW_FOLDER"
            )
    signer = f"signed by key {report.signed_by}" if report.signed_by else "not signature-checked"
    out.print(f"{signer}; {rate(report.checked_bytes, report.seconds)} hashed")
    report.raise_for_problems()
    out.print("[bold green]bundle verified[/]")


def install_cmd(
    dirs: Annotated[
        list[Path], typer.Argument(help="Volumes as mounted (any subset; run again for the rest).")
    ],
    store: Annotated[
        Path | None, typer.Option("--store", help="The model store (default: $AIRLOCK_HOME/store).")
    ] = None,
    trust: TrustOpt = None,
    allow_unsigned: UnsignedOpt = False,
    workers: WorkersOpt = DEFAULT_WORKERS,
) -> None:
    """Verify a bundle and install it into the model store (Hugging Face cache layout), straight from its volumes."""
    from airlock.bundle.airgap.install import InstallOptions, install
    from airlock.cli.bundle_render import rate
    from airlock.common.fileio import human

    started = time.monotonic()
    with _reading(dirs, trust, allow_unsigned, workers) as volumes:
        result = install(InstallOptions(volumes, store=store or Settings.from_env().store))
    took = time.monotonic() - started
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}")
    copied = rate(result.copied_bytes, took)
    if not result.complete:
        out.print(f"installed what volume(s) {', '.join(map(str, result.mounted))} hold: {copied}")
        raise MissingVolumeError(
            f"mount volume(s) {', '.join(map(str, result.needed))} and run the same command again",
            hint="what is installed so far is kept and verified",
        )
    out.print(f"[bold green]installed[/] bundle {result.bundle[:16]} into {result.store}: {copied}")
    if result.reused_bytes:
        out.print(f"  {human(result.reused_bytes)} were already in the store and were not copied again")
    for m in result.models:
        out.print(f"  model [bold]{m.name}[/]: {m.repo}@{m.commit[:12]}  {m.path}")
    if result.wheels:
        out.print(
            f"  {len(result.wheels)} wheels: pip install --no-index --find-links {result.store}/wheels ..."
        )
    if result.files:
        out.print(f"  {len(result.files)} files under {result.store}/files/")
    if result.spec_path:
        out.print(f"serve them: [bold]airlock serve --config {result.spec_path}[/]")


def rebuild_cmd(
    dirs: Annotated[
        list[Path], typer.Argument(help="The volumes still at hand (at least as many as data volumes).")
    ],
    volume: Annotated[int, typer.Option("--volume", min=1, help="The number of the volume to rebuild.")],
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write it (vol-NNNN/ is created there).")
    ],
    trust: TrustOpt = None,
    allow_unsigned: UnsignedOpt = False,
    workers: WorkersOpt = DEFAULT_WORKERS,
) -> None:
    """Rebuild a lost or damaged volume from the others and the parity volumes (pack --parity)."""
    from airlock.bundle.airgap.rebuild import RebuildOptions, rebuild
    from airlock.cli.bundle_render import rate

    started = time.monotonic()
    with _reading(dirs, trust, allow_unsigned, workers) as volumes:
        result = rebuild(RebuildOptions(volumes, volume=volume, out=out_dir))
    out.print(
        f"[bold green]rebuilt[/] volume {result.volume} at {result.path} from volumes "
        f"{', '.join(map(str, result.used))}: {rate(result.bytes, time.monotonic() - started)}"
    )
    out.print(f"[dim]check it: airlock verify {result.path}[/]")
