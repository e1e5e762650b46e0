"""serve's listening address: each wrong --host or --port is one line naming the right culprit."""

from __future__ import annotations

import errno
import socket
from typing import ClassVar

import pytest

from airlock.errors import ConfigError
from airlock.serving.stack import ServeOptions, bind
from airlock.spec import parse_spec

SPEC = parse_spec({"models": [{"name": "r", "engine": {"kind": "remote", "url": "http://127.0.0.1:9/v1"}}]})


class _Refusing(socket.socket):
    """A socket whose bind fails as the kernel would, with the errno under test (nothing is bound)."""

    error: ClassVar[OSError] = OSError()
    asked: ClassVar[list[object]] = []

    def bind(self, address: object) -> None:
        _Refusing.asked.append(address)
        raise self.error


def _bind_failing_with(
    error: int | OSError, host: str, port: int, monkeypatch: pytest.MonkeyPatch
) -> ConfigError:
    if isinstance(error, int):
        error = OSError(error, "refused by the test")
    monkeypatch.setattr(_Refusing, "error", error)
    monkeypatch.setattr(_Refusing, "asked", [])
    monkeypatch.setattr(socket, "socket", _Refusing)  # the module stack.bind uses
    with pytest.raises(ConfigError) as info:
        bind(host, port)
    assert _Refusing.asked == [(host, port)]  # exactly what was asked, no fallback address or port
    return info.value


def test_an_address_of_another_machine_is_a_host_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _bind_failing_with(errno.EADDRNOTAVAIL, "10.9.9.9", 8000, monkeypatch)
    assert err.message == "cannot listen on 10.9.9.9:8000: 10.9.9.9 is not an address of this machine"
    assert err.hint is not None and "--host 127.0.0.1" in err.hint and "--port" not in err.hint


def test_a_low_port_without_rights_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _bind_failing_with(errno.EACCES, "127.0.0.1", 80, monkeypatch)
    assert err.message == "cannot listen on 127.0.0.1:80: ports below 1024 need administrator rights"
    assert err.hint == "use a port of 1024 or above, e.g. --port 8000"


def test_a_port_in_use_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    err = _bind_failing_with(errno.EADDRINUSE, "127.0.0.1", 8000, monkeypatch)
    assert err.message == "cannot listen on 127.0.0.1:8000: the port is in use"
    assert err.hint is not None and "another --port" in err.hint


def test_an_unresolvable_host_is_a_host_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    err = _bind_failing_with(unknown, "no-such-host.invalid", 8000, monkeypatch)
    assert err.message == (
        "cannot listen on no-such-host.invalid:8000: "
        "no-such-host.invalid is not an address this machine can resolve"
    )
    assert err.hint is not None and "--host 127.0.0.1" in err.hint


@pytest.mark.parametrize("port", [-1, 65536, 99999])
def test_the_flag_follows_the_specs_port_rule(port: int) -> None:
    with pytest.raises(ConfigError) as info:
        ServeOptions(spec=SPEC, port=port)
    assert info.value.message == f"--port {port}: not a port number"
    assert info.value.exit_code == 2
    with pytest.raises(ConfigError, match="not a port number"):  # and bind itself never overflows
        bind("127.0.0.1", port)


@pytest.mark.parametrize("host", ["", "  ", "127.0.0.1 8000"])
def test_an_empty_or_spaced_host_is_refused_not_read_as_every_interface(host: str) -> None:
    with pytest.raises(ConfigError, match="not an address"):
        ServeOptions(spec=SPEC, host=host)
    with pytest.raises(ConfigError, match="not an address"):
        bind(host, 0)


def test_binds_exactly_the_address_asked() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
