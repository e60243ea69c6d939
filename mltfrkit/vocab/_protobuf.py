"""A minimal protobuf wire-format walker.

Two artifacts we read are protobuf messages: ONNX models (the token table is one
``TensorProto`` initializer) and SentencePiece ``.model`` files (the piece list). Walking
the wire format directly lets us pull out one field without the ``onnx`` or
``sentencepiece`` packages and without copying the payload: length-delimited fields come
back as ``(offset, length)`` into the caller's buffer.
"""

from __future__ import annotations

import struct
from typing import Iterator

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


def read_varint(buf, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return ``(value, next_pos)``."""
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed protobuf: varint longer than 10 bytes")


def iter_fields(buf, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, object]]:
    """Yield ``(field_number, wire_type, value)`` for each field of one message.

    ``value`` is an int for varint and fixed-width fields (raw bits for fixed ones) and an
    ``(offset, length)`` pair into ``buf`` for length-delimited fields (sub-messages,
    strings, bytes, packed arrays).
    """
    pos = start
    end = len(buf) if end is None else end
    while pos < end:
        key, pos = read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == FIXED64:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == FIXED32:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        elif wire == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos)
            value = (pos, length)
            pos += length
        else:
            raise ValueError(f"malformed protobuf: unsupported wire type {wire} at offset {pos}")
        if pos > end:
            raise ValueError("malformed protobuf: field runs past the end of its message")
        yield field, wire, value


def packed_varints(buf, span: tuple[int, int]) -> list[int]:
    """Decode a packed repeated varint field (e.g. ONNX ``dims``)."""
    pos, stop = span[0], span[0] + span[1]
    values = []
    while pos < stop:
        value, pos = read_varint(buf, pos)
        values.append(value)
    return values


def as_float32(bits: int) -> float:
    return struct.unpack("<f", struct.pack("<I", bits))[0]
