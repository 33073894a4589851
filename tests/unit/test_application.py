"""The AS's SIP handlers without sockets: identity, trust domain, charging vector, answers."""

from __future__ import annotations

from imsp2pd.content.application import ApplicationServer, AsConfig, asserted_identity, icid_of
from imsp2pd.sip.proxy import Source, Target
from imsp2pd.sip.ua import build_request

PSI = "sip:content@ims.example.org"


class FakeUA:
    def __init__(self) -> None:
        self.handlers: dict = {}

    def on(self, method, handler) -> None:
        self.handlers[method] = handler


def server(trusted=("127.0.0.1",)) -> ApplicationServer:
    config = AsConfig(
        PSI,
        "sip:as@127.0.0.1:7060",
        Target("TCP", "127.0.0.1", 6060),
        trusted_hosts=frozenset(trusted),
    )
    return ApplicationServer(FakeUA(), None, None, None, config, lambda: 0.0)  # type: ignore[arg-type]


def message(extra=(), ctype="text/plain", uri=PSI):
    return build_request(
        "MESSAGE",
        uri,
        from_uri="sip:alice@ims.example.org",
        body=b"x",
        content_type=ctype,
        extra=tuple(extra),
    )


PAI = ("P-Asserted-Identity", '"Alice" <sip:alice@ims.example.org>')
S_CSCF = Source("TCP", "127.0.0.1", 40000)


def test_identity_and_icid() -> None:
    req = message(
        [
            ("P-Asserted-Identity", "<tel:+15551234>"),
            PAI,
            ("P-Charging-Vector", 'icid-value="abc123";icid-generated-at=10.0.0.1'),
        ]
    )
    assert asserted_identity(req) == "sip:alice@ims.example.org"
    assert icid_of(req) == "abc123"
    assert icid_of(message()) == ""
    assert asserted_identity(message()) is None


def test_only_the_trust_domain_may_assert_an_identity() -> None:
    app = server(trusted=("192.0.2.7",))
    resp = app.on_message(message([PAI]), S_CSCF)
    assert resp.status == 403
    app = server()
    assert app.on_message(message([PAI]), S_CSCF).status == 415
    assert app.on_message(message([]), S_CSCF).status == 403
    assert app.on_message(message([PAI], uri="sip:other@ims.example.org"), S_CSCF).status == 404


def test_publish_and_subscribe_need_the_event_package() -> None:
    app = server()
    pub = build_request(
        "PUBLISH", PSI, from_uri="sip:carol@ims.example.org", extra=(PAI, ("Event", "presence"))
    )
    assert app.on_publish(pub, S_CSCF).status == 489
    sub = build_request(
        "SUBSCRIBE", PSI, from_uri="sip:bob@ims.example.org", extra=(PAI, ("Event", "reg"))
    )
    assert app.on_subscribe(sub, S_CSCF).status == 489
    sub = build_request(
        "SUBSCRIBE",
        PSI,
        from_uri="sip:bob@ims.example.org",
        extra=(PAI, ("Event", "imsp2p-content;genre=drama")),
    )
    assert app.on_subscribe(sub, S_CSCF).status == 400  # no Contact
