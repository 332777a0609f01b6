"""Malformed protobuf bodies (testing/protobuf.py) are refused at once, never expanded: the
emulator reads them before authentication."""

from __future__ import annotations

from mcp_remediator.testing import protobuf


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire) + payload


def delimited(number: int, payload: bytes) -> bytes:
    return field(number, 2, varint(len(payload)) + payload)


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = delimited(1, api_version.encode()) + delimited(2, kind.encode())
    return protobuf.MAGIC + delimited(1, type_meta) + delimited(2, raw)


def test_a_configmap_is_read() -> None:
    meta = delimited(1, b"settings")
    entry = delimited(1, b"a") + delimited(2, b"b")
    body = envelope("v1", "ConfigMap", delimited(1, meta) + delimited(2, entry))
    decoded = protobuf.decode(body)
    assert decoded == {"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "settings"}, "data": {"a": "b"}}  # fmt: skip


def test_a_varint_where_a_message_belongs_is_refused_at_once() -> None:
    # metadata (a message) sent as the varint 10^8: never 10^8 zero bytes to parse.
    body = envelope("v1", "ConfigMap", field(1, 0, varint(10**8)))
    assert protobuf.decode(body) is None


def test_an_out_of_range_time_is_refused_not_raised() -> None:
    timestamp = delimited(8, field(1, 0, varint(10**13)))  # creationTimestamp.seconds
    body = envelope("v1", "ConfigMap", delimited(1, delimited(1, b"x") + timestamp))
    assert protobuf.decode(body) is None
