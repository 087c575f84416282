"""Why a serialized request could not be decoded, said as field paths a caller can act on.

protobuf refuses a whole message when one string field holds bytes that are not UTF-8, and says
neither which field nor where. Envoy's JSON transcoder puts path and query values into string fields
byte for byte (`GET /v1/conversations/%FF`), and a gRPC client can send any bytes, so this is an
input error the caller must be told about by field name. This module reads the wire format itself
(varints and length-delimited records, guided by the message descriptor) to find those fields.

No grpc here: the interceptor calls it only after protobuf has refused a request.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

# Nested messages deeper than this are not searched: our contracts nest three levels at most, and a
# crafted request must not make the search itself expensive.
MAX_DEPTH = 8
# A request can name at most this many bad fields (the status clips violations further).
MAX_FOUND = 20

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class _Malformed(Exception):
    """The bytes are not a well-formed protobuf record stream."""


def invalid_utf8_fields(descriptor: Descriptor, data: bytes) -> list[str]:
    """Paths (`conversation_id`, `segments[1].text`) of string fields whose bytes are not UTF-8.

    Returns what was found before the bytes stopped making sense; an empty list means the message
    is broken in some other way (truncated, wrong wire types).
    """
    found: list[str] = []
    try:
        _walk(descriptor, memoryview(data), "", found, 0)
    except _Malformed:
        pass
    return found


def _walk(descriptor: Descriptor, data: memoryview, prefix: str, found: list[str], depth: int) -> None:
    seen: dict[int, int] = {}
    pos = 0
    while pos < len(data) and len(found) < MAX_FOUND:
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            _, pos = _varint(data, pos)
        elif wire_type == _FIXED64:
            pos = _skip(data, pos, 8)
        elif wire_type == _FIXED32:
            pos = _skip(data, pos, 4)
        elif wire_type == _LENGTH_DELIMITED:
            length, pos = _varint(data, pos)
            end = _skip(data, pos, length)
            field = descriptor.fields_by_number.get(number)
            if field is not None:
                index = seen.get(number, 0)
                seen[number] = index + 1
                _check(field, data[pos:end], _path(prefix, field, index), found, depth)
            pos = end
        else:
            raise _Malformed  # groups (wire types 3 and 4) do not exist in proto3 contracts


def _check(field: FieldDescriptor, value: memoryview, path: str, found: list[str], depth: int) -> None:
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            found.append(path)
    elif field.message_type is not None and depth < MAX_DEPTH:
        if _is_map(field):
            # A map names its entries by key, which may be the bad bytes itself: name the map.
            nested: list[str] = []
            _walk(field.message_type, value, "", nested, depth + 1)
            if nested and path not in found:
                found.append(path)
        else:
            _walk(field.message_type, value, path + ".", found, depth + 1)


def _path(prefix: str, field: FieldDescriptor, index: int) -> str:
    if field.is_repeated and not _is_map(field):
        return f"{prefix}{field.name}[{index}]"
    return f"{prefix}{field.name}"


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _skip(data: memoryview, pos: int, length: int) -> int:
    end = pos + length
    if end > len(data):
        raise _Malformed
    return end
