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
:mod:`~imsp2pd.diameter.node`. Cx messages: :mod:`~imsp2pd.diameter.cx`.

A Cx client (an I-CSCF or S-CSCF) in a few lines::

    from imsp2pd.diameter import cx
    from imsp2pd.diameter.codes import Application, Vendor
    from imsp2pd.diameter.node import DiameterNode, PeerConfig
    from imsp2pd.diameter.peer import LocalConfig

    node = DiameterNode(
        reactor,
        LocalConfig("icscf.ims.example.org", "ims.example.org",
                    vendor_applications=((Vendor.TGPP, Application.CX),)),
        peers=[PeerConfig("hss.ims.example.org", "ims.example.org", "127.0.0.1", 3868)],
        handler=None,            # or a callable(request, peer) -> answer | Deferred
    )
    node.start()                 # dials, reconnects with backoff, watchdog, failover
    ids = cx.SessionIds("icscf.ims.example.org", reactor.seconds())
    d = node.request(cx.uar(cx.Origin("icscf.ims.example.org", "ims.example.org"),
                            ids.next(), "ims.example.org", impi, impu, "ims.example.org"))
    # fires with the UAA: cx.outcome(uaa), cx.server_name(uaa), cx.server_capabilities(uaa);
    # fails with PeerUnavailable (no open HSS) or RequestTimeout.

Each node needs its own Origin-Host: two connections from one identity are
resolved by the election of RFC 6733 5.6.4 (one of them is closed).
"""
