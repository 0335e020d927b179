"""The KServe v2 inference protocol's HTTP bodies (Triton's flavour), both directions, JSON and binary.

A request or response body is a JSON header, optionally followed by raw tensor bytes (Triton's binary tensor data
extension: the header's length travels in the `Inference-Header-Content-Length` HTTP header, each binary tensor
says its size in `parameters.binary_data_size`, and the tensors follow in the order they are listed). BYTES
elements are a 4-byte little-endian length then the bytes; numeric tensors are little-endian, row-major.
This is what `tritonclient.http` sends with `binary_data=True` and reads with `binary_data_output=True`.

Scope, chosen for the reward model (whose inputs are all BYTES and outputs FP32 and BYTES): BYTES tensors are
decoded to `str` (strict UTF-8), BOOL/FP32/FP64/INT32/INT64 tensors to numpy; tensors of other datatypes are parsed
and bounds-checked but not decoded (`data` is None), so a model can name them in its error message.
Every malformed body raises ProtocolError with a message naming the field and what is wrong; nothing here
allocates more than the body's size (element counts are checked against the bytes before use).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
ITEM_SIZES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2}
ITEM_SIZES |= {"UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}
DATATYPES = frozenset((*ITEM_SIZES, "BYTES"))
NUMPY_TYPES = {"BOOL": "?", "FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}
_LENGTH = struct.Struct("<I")
_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


class ProtocolError(ValueError):
    """A body that breaks the protocol; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[str] | np.ndarray | None  # flat; None for datatypes this codec does not decode


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None  # None: the request-wide default


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_output: bool  # request-wide default for outputs


# --- server side -------------------------------------------------------------------------------------------


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """Parse an infer request body (with the value of its Inference-Header-Content-Length, if any)."""
    header, binary = _split_body(body, header_length, "request")
    if not isinstance(header, dict):
        raise ProtocolError("request body must be a JSON object with 'inputs'")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"request 'id' must be a string, got {type(request_id).__name__}")
    entries = header.get("inputs")
    if not isinstance(entries, list):
        raise ProtocolError("request must have 'inputs', a list of tensors {name, datatype, shape, data}")
    tensors = _read_tensors(entries, binary, "input")
    parameters = _parameters(header, "request")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise ProtocolError("request parameter 'binary_data_output' must be true or false")
    return InferRequest(request_id, tensors, _requested_outputs(header.get("outputs")), binary_output)


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: Sequence[Tensor], binary: set[str]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers; outputs named in `binary` go as binary tensor data."""
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    return _encode(header, "outputs", outputs, binary)


def error_body(message: str) -> bytes:
    """Triton's error body, which tritonclient turns into InferenceServerException(msg=message)."""
    return _json_encoder.encode({"error": message})


# --- client side -------------------------------------------------------------------------------------------


def encode_request(
    inputs: Sequence[Tensor], binary: bool, outputs: Sequence[str] = (), request_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """An infer request body and its headers; with `binary` all inputs and outputs travel as binary data."""
    header: dict[str, Any] = {}
    if request_id is not None:
        header["id"] = request_id
    if outputs:
        header["outputs"] = [{"name": name, "parameters": {"binary_data": binary}} for name in outputs]
    else:
        header["parameters"] = {"binary_data_output": binary}
    return _encode(header, "inputs", inputs, {t.name for t in inputs} if binary else set())


def decode_response(body: bytes, header_length: str | None) -> tuple[str | None, dict[str, Tensor]]:
    """(id, outputs by name) of an infer response body."""
    header, binary = _split_body(body, header_length, "response")
    if not isinstance(header, dict) or not isinstance(header.get("outputs"), list):
        raise ProtocolError("response must be a JSON object with 'outputs'")
    request_id = header.get("id")
    return (request_id if isinstance(request_id, str) else None), _read_tensors(header["outputs"], binary, "output")


# --- shared ------------------------------------------------------------------------------------------------


def _split_body(body: bytes, header_length: str | None, what: str) -> tuple[Any, bytes]:
    if header_length is None:
        json_part, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH}={header_length[:40]!r} is not an integer") from None
        if not 0 < length <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH}={length} must be in [1, {len(body)}] (the body's size)")
        json_part, binary = body[:length], body[length:]
    if not json_part:
        raise ProtocolError(f"{what} body is empty; send a JSON object with 'inputs'")
    try:
        return _json_decoder.decode(json_part), binary
    except (msgspec.DecodeError, RecursionError) as error:  # msgspec bounds nesting with RecursionError
        hint = f" (binary data? send {HEADER_LENGTH})" if header_length is None else ""
        raise ProtocolError(f"{what} header is not valid JSON: {error}{hint}") from None


def _parameters(entry: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError(f"{what} 'parameters' must be an object")
    return parameters


def _requested_outputs(entries: object) -> list[RequestedOutput] | None:
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise ProtocolError("request 'outputs' must be a list of {name, parameters}")
    outputs = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ProtocolError(f"requested output {i} must be an object with a string 'name'")
        binary = _parameters(entry, f"output {entry['name']!r}").get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise ProtocolError(f"output {entry['name']!r} parameter 'binary_data' must be true or false")
        outputs.append(RequestedOutput(entry["name"], binary))
    return outputs


def _read_tensors(entries: list[Any], binary: bytes, kind: str) -> dict[str, Tensor]:
    tensors: dict[str, Tensor] = {}
    offset = 0
    for i, entry in enumerate(entries):
        name, datatype, shape = _tensor_header(entry, i, kind)
        if name in tensors:
            raise ProtocolError(f"{kind} {name!r} is given twice")
        count = math.prod(shape)
        size = _parameters(entry, f"{kind} {name!r}").get("binary_data_size")
        if size is not None:
            if "data" in entry:
                raise ProtocolError(f"{kind} {name!r} has both 'data' and parameters.binary_data_size; send one")
            if not _is_int(size) or size < 0 or offset + size > len(binary):
                raise ProtocolError(
                    f"{kind} {name!r}: binary_data_size={size!r} does not fit the {len(binary) - offset} binary "
                    f"bytes left after the JSON header ({HEADER_LENGTH} or the sizes are wrong)"
                )
            data = _binary_data(name, datatype, count, binary[offset : offset + size], kind)
            offset += size
        elif "data" in entry:
            data = _json_data(name, datatype, count, entry["data"], kind)
        else:
            raise ProtocolError(f"{kind} {name!r} has neither 'data' nor parameters.binary_data_size")
        tensors[name] = Tensor(name, datatype, shape, data)
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes follow the last binary tensor; the sizes are wrong")
    return tensors


def _tensor_header(entry: object, index: int, kind: str) -> tuple[str, str, tuple[int, ...]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ProtocolError(f"{kind} {index} must be an object with a string 'name'")
    name, datatype, shape = entry["name"], entry.get("datatype"), entry.get("shape")
    if datatype not in DATATYPES:
        raise ProtocolError(f"{kind} {name!r} has datatype {datatype!r}; use one of {', '.join(sorted(DATATYPES))}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise ProtocolError(f"{kind} {name!r} has shape {shape!r}; a shape is a list of non-negative integers")
    return name, datatype, tuple(shape)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _binary_data(name: str, datatype: str, count: int, raw: bytes, kind: str) -> list[str] | np.ndarray | None:
    if datatype == "BYTES":
        return _split_bytes(name, count, raw, kind)
    if count * ITEM_SIZES[datatype] != len(raw):
        raise ProtocolError(f"{kind} {name!r}: shape holds {count} {datatype} values, but {len(raw)} bytes came")
    return np.frombuffer(raw, dtype=NUMPY_TYPES[datatype]) if datatype in NUMPY_TYPES else None


def _split_bytes(name: str, count: int, raw: bytes, kind: str) -> list[str]:
    if count * _LENGTH.size > len(raw):
        raise ProtocolError(f"{kind} {name!r}: shape holds {count} elements, but {len(raw)} bytes cannot hold them")
    values: list[str] = []
    position, end = 0, len(raw)
    for i in range(count):
        if position + _LENGTH.size > end:
            raise ProtocolError(f"{kind} {name!r}: binary data ends inside element {i} of {count}")
        (length,) = _LENGTH.unpack_from(raw, position)
        start, position = position + _LENGTH.size, position + _LENGTH.size + length
        if position > end:
            raise ProtocolError(f"{kind} {name!r}: element {i} says {length} bytes; only {end - start} remain")
        try:
            values.append(raw[start:position].decode())
        except UnicodeDecodeError as error:
            raise ProtocolError(
                f"{kind} {name!r}: element {i} is not UTF-8 text ({error.reason} at byte {error.start})"
            ) from None
    if position != end:
        raise ProtocolError(f"{kind} {name!r}: {end - position} bytes left after its {count} elements")
    return values


def _json_data(name: str, datatype: str, count: int, data: object, kind: str) -> list[str] | np.ndarray | None:
    values = _flatten(data) if isinstance(data, list) else None
    if values is None:
        raise ProtocolError(f"{kind} {name!r}: 'data' must be a (nested) list in row-major order")
    if len(values) != count:
        raise ProtocolError(f"{kind} {name!r}: 'data' has {len(values)} elements, its shape says {count}")
    if datatype == "BYTES":
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise ProtocolError(f"{kind} {name!r}: element {i} is {type(value).__name__}; BYTES data are strings")
        return values
    if datatype not in NUMPY_TYPES:
        return None
    if datatype == "BOOL" and not all(isinstance(value, bool) for value in values):
        raise ProtocolError(f"{kind} {name!r}: BOOL 'data' must hold true or false")
    try:
        return np.asarray(values, dtype=NUMPY_TYPES[datatype])
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(f"{kind} {name!r}: 'data' holds values that are not {datatype}") from None


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(value, list) for value in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative: a deeply nested list must not exhaust the recursion limit
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _encode(
    header: dict[str, Any], key: str, tensors: Sequence[Tensor], binary: set[str]
) -> tuple[bytes, dict[str, str]]:
    entries, chunks = [], []
    for tensor in tensors:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if tensor.name in binary:
            raw = _tensor_bytes(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensor.data.tolist() if isinstance(tensor.data, np.ndarray) else tensor.data
        entries.append(entry)
    header[key] = entries
    json_part = _json_encoder.encode(header)
    if not chunks:
        return json_part, {"Content-Type": JSON_CONTENT_TYPE}
    headers = {"Content-Type": BINARY_CONTENT_TYPE, HEADER_LENGTH: str(len(json_part))}
    return b"".join([json_part, *chunks]), headers


def _tensor_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.data)  # type: ignore[arg-type]
    if tensor.datatype not in NUMPY_TYPES or tensor.data is None:
        raise ValueError(f"cannot encode {tensor.datatype} tensor {tensor.name!r}")
    return np.ascontiguousarray(tensor.data, dtype=NUMPY_TYPES[tensor.datatype]).tobytes()


def serialize_bytes(values: Sequence[str | bytes]) -> bytes:
    """A BYTES tensor's binary form: each element as a 4-byte little-endian length and its UTF-8 bytes."""
    encoded = [value.encode() if isinstance(value, str) else value for value in values]
    if not any(encoded):
        return bytes(_LENGTH.size * len(encoded))  # all empty (the usual `errors` output): zeros
    parts: list[bytes] = []
    pack = _LENGTH.pack
    for value in encoded:
        parts.append(pack(len(value)))
        parts.append(value)
    return b"".join(parts)
