"""Minimal safetensors reader/writer on numpy (the python `safetensors`
package is not installed here). Layout: u64 little-endian header length N,
N bytes of JSON header, then the data region; data_offsets are relative to
the start of the data region. BF16 has no numpy dtype: it is carried as
uint16 bit patterns (the upper half of a float32)."""
import json
import os
import struct

import numpy as np

_NP = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
    "BF16": np.uint16,
}


def f32_to_bf16_bits(a):
    """float32 array -> uint16 BF16 bit patterns, round to nearest even."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounding = ((bits >> 16) & 1) + 0x7FFF
    return ((bits + rounding) >> 16).astype(np.uint16)


def bf16_bits_to_f32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_storage(a, dtype):
    """float32 array -> (dtype name, array in its stored form)."""
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F32":
        return a
    if dtype == "F16":
        return a.astype(np.float16)
    if dtype == "BF16":
        return f32_to_bf16_bits(a)
    raise ValueError("unsupported storage dtype " + dtype)


def upcast(a, dtype):
    """Stored array -> float32 values (what a loader computes with)."""
    if dtype == "BF16":
        return bf16_bits_to_f32(a)
    return np.asarray(a).astype(np.float32)


def write(path, tensors, metadata=None):
    """tensors: list of (name, dtype name, numpy array in stored form)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, dtype, arr in tensors:
        arr = np.ascontiguousarray(arr, dtype=_NP[dtype])
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    hs = json.dumps(header, separators=(",", ":")).encode()
    hs += b" " * ((8 - (8 + len(hs)) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hs)))
        f.write(hs)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    return offset


def read(path):
    """-> (dict name -> (dtype name, array), metadata dict)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    base = 8 + n
    for name, info in header.items():
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[base + b:base + e], dtype=_NP[info["dtype"]]).reshape(info["shape"])
        out[name] = (info["dtype"], arr)
    return out, meta


def read_f32(path):
    tensors, _ = read(path)
    return {k: upcast(a, d) for k, (d, a) in tensors.items()}


_NAME = {np.dtype(v): k for k, v in _NP.items() if k != "BF16"}


def save(path, tensors, metadata=None):
    """tensors: dict name -> numpy array; the dtype name follows the array's."""
    write(path, [(name, _NAME[np.asarray(a).dtype], a) for name, a in tensors.items()], metadata)


def load(path):
    """-> (dict name -> numpy array as stored, metadata dict)."""
    tensors, meta = read(path)
    return {k: a for k, (_, a) in tensors.items()}, meta
