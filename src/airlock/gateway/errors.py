"""OpenAI-style errors: services raise :class:`APIError`; one handler renders ``{"error": {...}}``."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    @property
    def type(self) -> str:
        return _TYPES.get(self.status, "server_error")

    def body(self) -> bytes:
        return error_body(self.status, self.message, param=self.param, code=self.code)

    def header_pairs(self) -> list[tuple[bytes, bytes]]:
        """The extra headers as ASGI's (name, value) pairs."""
        return [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> bytes:
    err = {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}
    return orjson.dumps({"error": err})


def key_store_unavailable(doing: str) -> APIError:
    """The 503 for a key database that cannot be used (locked past its timeout, deleted, damaged)."""
    return APIError(
        503,
        f"the gateway cannot use its key database {doing}; retry shortly (the operator is told why "
        "in the gateway's log)",
        code="key_store_unavailable",
        headers={"Retry-After": "1"},
    )
