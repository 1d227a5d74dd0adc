"""Metadata embedded in the model files themselves, read without onnx or TensorFlow.

Export writes a digest of each graph's contract (the vocabulary, the graph's
tensor names, the decoder state) into the file: ONNX ``metadata_props``, TFLite
``metadata``. The runtime compares it with ``artifact.json``, so an edited
metadata file (a reversed vocabulary, renamed tensors) is refused instead of
decoding confidently wrong strings. Both readers look only at the top of the
file's structure: the ONNX protobuf's top-level fields, the TFLite flatbuffer's
root table.
"""
from __future__ import annotations

import struct

CONTRACT_KEY = "seq2seq.contract_sha256"


class MalformedModel(ValueError):
    """The bytes are not the protobuf or flatbuffer the reader expects."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MalformedModel("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _proto_fields(data: bytes):
    """(field number, bytes) of each length-delimited top-level field."""
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise MalformedModel("field runs past the end")
            yield number, data[pos:pos + size]
            pos += size
        else:
            raise MalformedModel(f"wire type {wire}")


def onnx_metadata(data: bytes) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` (ModelProto field 14: key 1, value 2)."""
    props = {}
    for number, entry in _proto_fields(data):
        if number == 14:
            fields = dict(_proto_fields(entry))
            props[fields.get(1, b"").decode("utf-8", "replace")] = fields.get(2, b"").decode(
                "utf-8", "replace")
    return props


def _u32(data: bytes, pos: int) -> int:
    if pos < 0 or pos + 4 > len(data):
        raise MalformedModel("offset out of range")
    return struct.unpack_from("<I", data, pos)[0]


def _field(data: bytes, table: int, index: int) -> int | None:
    """Position of field ``index`` of the flatbuffer table at ``table``, or None."""
    if table < 0:
        raise MalformedModel("offset out of range")
    vtable = table - struct.unpack_from("<i", data, table)[0]
    if vtable < 0:
        raise MalformedModel("offset out of range")
    size = struct.unpack_from("<H", data, vtable)[0]
    if 4 + 2 * index >= size:
        return None
    offset = struct.unpack_from("<H", data, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _vector(data: bytes, pos: int, item_size: int) -> tuple[int, int]:
    start = pos + _u32(data, pos)
    count = _u32(data, start)
    if start + 4 + count * item_size > len(data):
        raise MalformedModel("vector runs past the end")
    return start + 4, count


def tflite_metadata(data: bytes) -> dict[str, bytes]:
    """A TFLite file's ``metadata`` entries (Model field 6: name, buffer index into
    Model field 4, the buffers)."""
    try:
        model = _u32(data, 0)
        entries, buffers = _field(data, model, 6), _field(data, model, 4)
        if entries is None:
            return {}
        found = {}
        if buffers is None:
            raise MalformedModel("metadata without buffers")
        first, count = _vector(data, entries, 4)
        buf_first, buf_count = _vector(data, buffers, 4)
        for i in range(count):
            item = first + 4 * i
            table = item + _u32(data, item)
            name_at, index_at = _field(data, table, 0), _field(data, table, 1)
            if name_at is None or index_at is None:
                continue
            start, length = _vector(data, name_at, 1)
            index = _u32(data, index_at)
            if index >= buf_count:
                raise MalformedModel("metadata buffer index out of range")
            item = buf_first + 4 * index
            buffer = item + _u32(data, item)
            data_at = _field(data, buffer, 0)
            if data_at is None:
                continue
            b_start, b_length = _vector(data, data_at, 1)
            found[data[start:start + length].decode("utf-8", "replace")] = bytes(
                data[b_start:b_start + b_length])
        return found
    except struct.error as e:
        raise MalformedModel(str(e)) from None


def ort_metadata(data: bytes) -> dict[str, str]:
    """An ORT-format file's ``metadata_props`` (InferenceSession field 1, the model;
    Model field 9: entries of key 0 and value 1), as the converter copies them
    from the ONNX file."""
    try:
        session = _u32(data, 0)
        model_at = _field(data, session, 1)
        if model_at is None:
            raise MalformedModel("no model in the ORT file")
        model = model_at + _u32(data, model_at)
        props_at = _field(data, model, 9)
        if props_at is None:
            return {}
        first, count = _vector(data, props_at, 4)
        found = {}
        for i in range(count):
            item = first + 4 * i
            entry = item + _u32(data, item)
            texts = []
            for index in (0, 1):
                at = _field(data, entry, index)
                if at is None:
                    texts.append("")
                    continue
                start, length = _vector(data, at, 1)
                texts.append(data[start:start + length].decode("utf-8", "replace"))
            found[texts[0]] = texts[1]
        return found
    except struct.error as e:
        raise MalformedModel(str(e)) from None


def contract_of(data: bytes, fmt: str) -> str | None:
    """The contract digest embedded in a model file, or None when it has none."""
    if fmt == "onnx":
        return onnx_metadata(data).get(CONTRACT_KEY)
    if fmt == "ort":
        return ort_metadata(data).get(CONTRACT_KEY)
    value = tflite_metadata(data).get(CONTRACT_KEY)
    return None if value is None else value.decode("ascii", "replace")
