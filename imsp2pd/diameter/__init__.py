"""Diameter (RFC 6733) for imsp2pd.

Pure, sans-IO modules (no ``twisted.internet``):

* :mod:`~imsp2pd.diameter.codes` -- IntEnums for commands, applications,
  vendors, AVP codes and result codes.
* :mod:`~imsp2pd.diameter.dictionary` -- AVP and command definitions for the
  base protocol, Cx/Dx (TS 29.229), DCCA (RFC 4006) and the TS 32.299 IMS AVPs.
* :mod:`~imsp2pd.diameter.avp` and :mod:`~imsp2pd.diameter.message` -- the
  codec, with total decoding: malformed input raises a
  :class:`~imsp2pd.diameter.errors.DiameterError` carrying the result code and
  Failed-AVP of the answer it calls for.
* :mod:`~imsp2pd.diameter.peer` -- the peer connection state machine
  (RFC 6733 section 5.6, watchdog of RFC 3539).

Twisted adapters: :mod:`~imsp2pd.diameter.protocol` and
:mod:`~imsp2pd.diameter.node`.
"""
