"""The little of protobuf's wire format that streaming a large GraphDef file needs.

Python protobuf parses or serializes a message whole, so a 1.4 GB frozen graph would sit in
memory twice while parsing (the file's bytes and the parsed message). `stream_read` instead
walks the file's top-level fields with these helpers, parses small nodes in batches, and
reads a large Const's `tensor_content` straight into a numpy array; `stream_write` splices
such a value back into a node's serialization. Encoding reference:
https://protobuf.dev/programming-guides/encoding/ (varints; keys are field << 3 | type).

    message    := field*
    field      := key:varint  value
    value      := varint (type 0) | 8 bytes (1) | length:varint bytes (2) | 4 bytes (5)

Anything this reader does not expect (groups, types 3/4, ranges past the end) raises
`WireError`; callers then fall back to protobuf's own parser, whose messages users see.
"""

from __future__ import annotations

import dataclasses
from typing import BinaryIO, Iterator

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
_FIXED_SIZES = {FIXED64: 8, FIXED32: 4}


class WireError(ValueError):
    """The bytes are not what this reader handles (protobuf's own parser may still)."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a message in a file: number, wire type, and byte offsets.

    start: where its key begins; value_start/end: its payload (for length-delimited fields,
    after the length). The field's whole encoding is file[start:end].
    """

    number: int
    wire_type: int
    start: int
    value_start: int
    end: int


def encode_key(number: int, wire_type: int = LENGTH_DELIMITED) -> bytes:
    """A field's key: its number and wire type as one varint."""
    return encode_varint(number << 3 | wire_type)


def encode_varint(value: int) -> bytes:
    """Protobuf's base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(handle: BinaryIO, limit: int) -> int:
    value, shift = 0, 0
    while True:
        if handle.tell() >= limit or shift > 63:
            raise WireError(f"varint runs past offset {limit}")
        byte = handle.read(1)
        if not byte:
            raise WireError("file ends inside a varint")
        value |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            return value


def fields(handle: BinaryIO, start: int, end: int) -> Iterator[Field]:
    """The fields of the message stored at file[start:end], in order, without their payloads.

    Each field is read from its own offset, so callers may move the handle in between.
    """
    position = start
    while position < end:
        handle.seek(position)
        key = _read_varint(handle, end)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at offset {position}")
        if wire_type == VARINT:
            value_start = handle.tell()
            _read_varint(handle, end)
            value_end = handle.tell()
        elif wire_type == LENGTH_DELIMITED:
            length = _read_varint(handle, end)
            value_start = handle.tell()
            value_end = value_start + length
        elif wire_type in _FIXED_SIZES:
            value_start = handle.tell()
            value_end = value_start + _FIXED_SIZES[wire_type]
        else:
            raise WireError(f"wire type {wire_type} (groups or invalid) at offset {position}")
        if value_end > end:
            raise WireError(f"field {number} at offset {position} runs past offset {end}")
        yield Field(number, wire_type, position, value_start, value_end)
        position = value_end


def read_range(handle: BinaryIO, start: int, end: int) -> bytes:
    handle.seek(start)
    data = handle.read(end - start)
    if len(data) != end - start:
        raise WireError(f"file ends before offset {end}")
    return data
