#!/usr/bin/env python3
"""Reference for MoEfication's soft co-activation, written from the definition
in docs/recording-and-splitting.md (not from the C++ kernel):

    S[i][j] = sum over blocks b of min(1, sum_{t in b} r_ti r_tj),  r = max(h, 0)

usage: soft_coact_ref.py H.npy BLOCKS.npy OUT.npy
  H.npy       float32 [tokens, n] activations
  BLOCKS.npy  float32 [nblocks, 2] (first token, length) per block
  OUT.npy     float32 [n, n], computed in float64 and rounded once
"""
import sys

import numpy as np


def main():
    h = np.load(sys.argv[1]).astype(np.float64)
    blocks = np.load(sys.argv[2]).astype(np.int64)
    r = np.maximum(h, 0.0)
    n = r.shape[1]
    s = np.zeros((n, n))
    for first, length in blocks:
        blk = r[first:first + length]
        s += np.minimum(1.0, blk.T @ blk)
    np.save(sys.argv[3], s.astype(np.float32))


if __name__ == "__main__":
    main()
