"""Typed errors of the Diameter stack.

Every error a peer can cause with what it sends is a :class:`DiameterError`;
the ones found while decoding carry the Result-Code and the Failed-AVP of the
answer RFC 6733 section 7 calls for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imsp2pd.diameter.avp import Avp
    from imsp2pd.diameter.message import Header


class DiameterError(Exception):
    """Base class of everything the Diameter stack raises on bad input or failure."""


class FramingError(DiameterError):
    """The byte stream cannot be split into messages any more: close the connection.

    ``result_code`` is the one to report if an answer can still be sent
    (5011 DIAMETER_UNSUPPORTED_VERSION, 5015 DIAMETER_INVALID_MESSAGE_LENGTH).
    """

    def __init__(self, reason: str, result_code: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result_code = result_code


class DecodeError(DiameterError):
    """A complete message (or AVP) is invalid; the framing is intact.

    ``header`` is set once the error leaves :func:`decode_message`, so that the
    receiver can answer a request with ``result_code`` and ``failed_avp``.
    """

    def __init__(
        self,
        reason: str,
        result_code: int,
        failed_avp: Avp | None = None,
        header: Header | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result_code = result_code
        self.failed_avp = failed_avp
        self.header = header

    def __repr__(self) -> str:
        return f"DecodeError({self.reason!r}, result_code={self.result_code})"


class EncodeError(DiameterError, ValueError):
    """A value cannot be encoded as the AVP type it was given (a programming error)."""


class RequestError(DiameterError):
    """A request we sent did not get an answer."""


class RequestTimeout(RequestError):
    """No answer came within the request timeout."""


class PeerUnavailable(RequestError):
    """No open peer can take the request (none configured, all down, or the peer closed)."""
