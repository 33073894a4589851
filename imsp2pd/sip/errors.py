"""Typed errors of the SIP stack.

A peer can make the parser fail in many ways; each failure raises
:class:`SipParseError` with a reason phrase that names the fault and the
status code a UAS should answer with (400 unless another code fits better:
505 for a bad version, 513 for an oversized message, 416 for an unsupported
Request-URI scheme).  When enough of the request was read to build a
response, ``headers`` carries the header fields seen so far and ``method``
the request method, so :func:`imsp2pd.sip.parser.error_response` can build the
answer; otherwise the message is dropped.
"""

from __future__ import annotations


class SipError(Exception):
    """Base class of every error raised by imsp2pd.sip."""


class SipParseError(SipError):
    """A message, header or URI that does not follow the grammar."""

    def __init__(
        self,
        reason: str,
        *,
        status: int = 400,
        method: str | None = None,
        headers: tuple[tuple[str, str], ...] | None = None,
        is_request: bool | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.method = method
        self.headers = headers
        self.is_request = is_request

    def with_context(
        self,
        *,
        method: str | None,
        headers: tuple[tuple[str, str], ...] | None,
        is_request: bool | None,
    ) -> SipParseError:
        """The same error, carrying what was read of the message."""
        return SipParseError(
            self.reason,
            status=self.status,
            method=method if self.method is None else self.method,
            headers=headers if self.headers is None else self.headers,
            is_request=is_request if self.is_request is None else self.is_request,
        )
