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


def triangle_side(length):
    """n with n(n+1)/2 == length, or None when length is not such a number."""
    n = int((np.sqrt(8.0 * length + 1.0) - 1.0) / 2.0)
    for m in (n - 1, n, n + 1):
        if m >= 0 and m * (m + 1) // 2 == length:
            return m
    return None


def unpack_upper_triangle(packed):
    """The packed upper triangle of a recording of format version 2 (a 1-D array
    of n(n+1)/2 elements, row i holding columns i..n-1, so (i, j), i <= j, sits at
    k = i*n - i*(i-1)/2 + (j - i); analysis/record/recording.h) -> the full
    symmetric [n, n] array of the same dtype. ValueError for another length."""
    packed = np.asarray(packed)
    n = triangle_side(packed.shape[0]) if packed.ndim == 1 else None
    if n is None:
        raise ValueError(f"not a packed upper triangle: shape {list(packed.shape)}")
    full = np.zeros((n, n), dtype=packed.dtype)
    iu = np.triu_indices(n)  # row-major (i, j), i <= j: the packing order
    full[iu] = packed
    full.T[iu] = packed
    return full


def load_coact(rec_dir):
    """coact.safetensors of a recording folder -> dict name -> the full symmetric
    [n, n] matrix, for both formats: version 1 stores the matrices, version 2
    (manifest.json "version": 2) their packed upper triangles (unpack_upper_triangle).
    ValueError for a tensor of the wrong rank for the version."""
    version = json.load(open(os.path.join(rec_dir, "manifest.json"))).get("version")
    path = os.path.join(rec_dir, "coact.safetensors")
    tensors, _ = load(path)
    out = {}
    for name, a in tensors.items():
        if version == 1:
            if a.ndim != 2 or a.shape[0] != a.shape[1]:
                raise ValueError(f"{path}: tensor '{name}' has shape {list(a.shape)}, expected [n, n] (version 1)")
            out[name] = a
        elif version == 2:
            if a.ndim != 1 or triangle_side(a.shape[0]) is None:
                raise ValueError(f"{path}: tensor '{name}' has shape {list(a.shape)}, expected [n(n+1)/2] (version 2)")
            out[name] = unpack_upper_triangle(a)
        else:
            raise ValueError(f"{rec_dir}/manifest.json: unsupported version {version!r} (1 and 2 are read)")
    return out
