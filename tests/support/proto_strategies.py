"""Hypothesis strategies that build any protobuf request with hostile but well-typed field values.

Used by the property tests that throw random input at every RPC and check that only documented
status codes come back. Strings lean towards values that trip validation: empty, ids that look valid,
path tricks, over-long text, control characters and non-ASCII.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor as pb_descriptor
from google.protobuf import message as pb_message
from hypothesis import strategies as st

FieldDescriptor = pb_descriptor.FieldDescriptor

_INTERESTING_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "default",
        "alice",
        "bob",
        "0123456789abcdef0123456789abcdef",
        "a" * 64,
        "a" * 65,
        "../etc/passwd",
        "conversation:x",
        "with space",
        "ünïcødé",
        "\x00",
        "\n",
        "$where",
        "{'$gt': ''}",
        "x" * 5000,
    ]
)
STRINGS = st.one_of(
    _INTERESTING_STRINGS, st.text(max_size=80), st.from_regex(r"[A-Za-z0-9_-]{1,70}", fullmatch=True)
)

_INT32 = st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]), st.integers(-(2**31), 2**31 - 1))
_INT64 = st.one_of(st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]), st.integers(-(2**63), 2**63 - 1))
_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)
_DOUBLES = st.floats(allow_nan=True, allow_infinity=True)

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: STRINGS,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=64),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_FLOAT: _FLOATS,
    FieldDescriptor.TYPE_DOUBLE: _DOUBLES,
}

# Proto3 enums are open: a client may send any int32, so numbers outside the enum are fair game.
_ENUM_NUMBERS = st.integers(-3, 12)


def messages(cls: type[pb_message.Message], depth: int = 3) -> st.SearchStrategy[pb_message.Message]:
    """Instances of `cls` with each field independently left unset or given a random value."""
    return _message_strategy(cls.DESCRIPTOR, cls, depth)


def _message_strategy(
    desc: pb_descriptor.Descriptor, cls: type[pb_message.Message], depth: int
) -> st.SearchStrategy[pb_message.Message]:
    field_strategies = {
        f.name: _field_strategy(f, depth) for f in desc.fields if depth > 0 or f.message_type is None
    }

    @st.composite
    def build(draw: st.DrawFn) -> pb_message.Message:
        msg = cls()
        for name, strategy in field_strategies.items():
            if draw(st.booleans()):
                _assign(msg, desc.fields_by_name[name], draw(strategy))
        return msg

    return build()


def _field_strategy(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key = _single(field.message_type.fields_by_name["key"], depth)
        value = _single(field.message_type.fields_by_name["value"], depth)
        return st.dictionaries(key, value, max_size=3)
    single = _single(field, depth)
    if field.is_repeated:
        return st.lists(single, max_size=4)
    return single


def _single(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.enum_type is not None:
        return _ENUM_NUMBERS
    if field.message_type is not None:
        return _message_strategy(field.message_type, _message_class(field), depth - 1)
    return _SCALARS[field.type]


def _message_class(field: FieldDescriptor) -> type[pb_message.Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(field.message_type)


def _assign(msg: pb_message.Message, field: FieldDescriptor, value: Any) -> None:
    target = getattr(msg, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        for key, item in value.items():
            if value_field.message_type is not None:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        if field.message_type is not None:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif field.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(msg, field.name, value)
