import pytest
from hypothesis import given
from hypothesis import strategies as st

from imsp2pd.content.multipart import MultipartError, Part, build, content_type_params, parse


def test_round_trip_binary_parts() -> None:
    torrent = b"d8:announce" + bytes(range(256)) + b"\r\n--x\r\ne"
    ctype, body = build(
        [Part("application/x-bittorrent", torrent), Part("application/json", b'{"a":1}')]
    )
    kind, params = content_type_params(ctype)
    assert kind == "multipart/mixed" and params["boundary"].startswith("imsp2p-")
    parts = parse(ctype, body)
    assert [(p.content_type, p.body) for p in parts] == [
        ("application/x-bittorrent", torrent),
        ("application/json", b'{"a":1}'),
    ]


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_round_trip_any_bytes(bodies: list[bytes]) -> None:
    ctype, body = build([Part("application/octet-stream", b) for b in bodies])
    assert [p.body for p in parse(ctype, body)] == bodies


def test_preamble_epilogue_and_part_headers() -> None:
    body = (
        b"preamble\r\n--b1\r\nContent-Type: text/plain\r\nContent-ID: <x>\r\n\r\nhello\r\n"
        b"--b1\r\n\r\nno headers\r\n--b1--\r\nepilogue"
    )
    parts = parse('multipart/mixed; boundary="b1"', body)
    assert parts[0] == Part("text/plain", b"hello", {"content-id": "<x>"})
    assert parts[1].content_type == "text/plain" and parts[1].body == b"no headers"


@pytest.mark.parametrize(
    ("ctype", "body", "fault"),
    [
        ("application/json", b"{}", "expected multipart/mixed"),
        ("multipart/mixed", b"--x\r\n\r\na\r\n--x--", "boundary"),
        ("multipart/mixed;boundary=x", b"nothing here", "no boundary delimiter"),
        ("multipart/mixed;boundary=x", b"--x\r\n\r\nabc", "without a close delimiter"),
        ("multipart/mixed;boundary=x", b"--x--", "without parts"),
        ("multipart/mixed;boundary=x", b"--xjunk\r\n\r\na\r\n--x--", "malformed boundary"),
        ("multipart/mixed;boundary=x", b"--x\r\nContent-Type: a\r\nbody\r\n--x--", "blank line"),
        (
            "multipart/mixed;boundary=x",
            b"--x\r\nnocolon\r\n\r\nb\r\n--x--",
            "malformed part header",
        ),
        ("multipart/mixed;boundary=x", b"--x\r\n\r\na\r\n" * 17 + b"--x--", "more than 16 parts"),
    ],
)
def test_malformed_bodies_name_the_fault(ctype: str, body: bytes, fault: str) -> None:
    with pytest.raises(MultipartError, match=fault):
        parse(ctype, body)


@given(st.binary(max_size=400))
def test_parse_never_raises_anything_else(body: bytes) -> None:
    try:
        parse("multipart/mixed;boundary=b", body)
    except MultipartError:
        pass
