"""The acceptance run inside its own network and mount namespace (``python -m airlock.accept.sandbox
REQUEST.json RESULT.json``, started by :func:`run_sandboxed` under ``unshare --net --mount``).

It prepares the namespace (:func:`airlock.accept.egress.prepare_namespace`), starts the refusing
resolver and the two socket witnesses, runs the prompts, and writes a :class:`RunResult` with every
attempt to leave that was seen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from airlock.accept.run import RunRequest, RunResult
from airlock.errors import AirlockError, ConfigError


def require_namespace_tools() -> str:
    """The ``unshare`` to run with, or ConfigError when this host cannot make the namespace (asked
    before the weights are hashed, which takes minutes for a large model)."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None or shutil.which("ip") is None:
        raise ConfigError(
            "accept check runs the stack in a network namespace, which needs root, unshare and ip",
            hint="run it as root on a host with util-linux and iproute2",
        )
    return unshare


def run_sandboxed(request: RunRequest) -> RunResult:
    """Run ``request`` in a fresh ``unshare --net --mount`` namespace (root only) and read its result."""
    unshare = require_namespace_tools()
    request.workdir.mkdir(parents=True, exist_ok=True)
    request_file = request.workdir / "run-request.json"
    result_file = request.workdir / "run-result.json"
    request_file.write_text(request.model_dump_json())
    result_file.unlink(missing_ok=True)
    log = request.workdir / "sandbox.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [unshare, "--net", "--mount", "--", sys.executable, "-m", "airlock.accept.sandbox",
             str(request_file), str(result_file)],
            stdout=out, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if not result_file.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise ConfigError(f"the sandboxed run failed (exit {done.returncode}) without a result:\n{tail}")
    return RunResult.model_validate_json(result_file.read_bytes())


def main(argv: list[str]) -> int:
    from airlock.accept.dns import RefusingResolver
    from airlock.accept.egress import PacketWatch, SocketWatch, Witness, prepare_namespace
    from airlock.accept.procnet import owner_of_port
    from airlock.accept.run import run_prompts

    request = RunRequest.model_validate_json(Path(argv[0]).read_bytes())
    result_path = Path(argv[1])
    witness = Witness()
    try:
        prepare_namespace(request.workdir)
        with (
            RefusingResolver(
                who=lambda port: owner_of_port("udp", port), on_lookup=witness.lookup
            ) as resolver,
            PacketWatch(witness),
            SocketWatch(witness),
        ):
            try:
                replies = run_prompts(request)
                error = None
            except AirlockError as exc:
                replies, error = [], str(exc)
                tail = getattr(exc, "log_tail", "")
                error += f"\n{tail}" if tail else ""
        result = RunResult(
            replies=replies, error=error, egress_watched=True, egress=witness.events,
            dns_lookups=len(resolver.lookups),
        )  # fmt: skip
    except AirlockError as exc:
        result = RunResult(error=f"the no-egress namespace could not be made: {exc}")
    result_path.write_text(result.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
