"""The served stack of an acceptance run: ``airlock serve`` of a spec in a child process
(``python -m airlock.accept.served SPEC.json``) on a free loopback port, without API keys; the child
prints ``LISTENING <url>`` once every engine is ready. Its log goes to a file beside the report."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from airlock.errors import EngineStartError
from airlock.spec import Spec

READY = "LISTENING "


def accept_spec(spec: Spec, audit_log: Path, store: Path | None) -> Spec:
    """The spec as an acceptance run serves it: loopback, a free port, no keys, one gateway process,
    its own audit log (checked afterwards), every engine required."""
    gateway = spec.gateway.model_copy(
        update={"host": "127.0.0.1", "port": 0, "auth": False, "audit_log": audit_log, "workers": 1}
    )
    return spec.model_copy(update={"gateway": gateway, "store": store if spec.store is None else spec.store})


@contextlib.contextmanager
def served(spec: Spec, workdir: Path, *, startup_timeout_s: float) -> Iterator[str]:
    """Serve ``spec`` in a child process; yield the gateway's URL; stop it (SIGTERM) on the way out."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_file = workdir / "served-spec.json"
    spec_file.write_text(spec.model_dump_json())
    log_path = workdir / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "airlock.accept.served", str(spec_file)],
            stdout=subprocess.PIPE, stderr=log, text=True, env=os.environ.copy(), start_new_session=True,
        )  # fmt: skip
    try:
        url = _wait_ready(proc, log_path, startup_timeout_s)
        yield url
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[str], log_path: Path, timeout_s: float) -> str:
    assert proc.stdout is not None
    found: list[str] = []

    def read() -> None:  # until the ready line, or the end of the child's output
        for line in proc.stdout or ():
            if line.startswith(READY):
                found.append(line)
                return
        found.append("")

    reader = threading.Thread(target=read)
    reader.daemon = True
    reader.start()
    reader.join(timeout_s)
    line = found[0] if found else ""
    if not line.startswith(READY):
        _stop(proc)
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        why = "did not get ready" if not found else f"exited (code {proc.poll()})"
        raise EngineStartError(
            f"the served stack {why} within {timeout_s:.0f} s", log_tail=tail, hint=f"its log: {log_path}"
        )
    return line.split()[1]


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def main(argv: list[str]) -> None:
    import uvloop

    from airlock.serving.stack import ServeOptions, serve
    from airlock.settings import Settings

    spec = Spec.model_validate_json(Path(argv[0]).read_bytes())
    options = ServeOptions(spec=spec, auth=False, require_all=True)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(
            serve(options, Settings.from_env(), on_listening=lambda info: print(READY + info.url, flush=True))
        )


if __name__ == "__main__":
    main(sys.argv[1:])
