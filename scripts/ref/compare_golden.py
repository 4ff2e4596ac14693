#!/usr/bin/env python3
"""Compares hf_logits.safetensors (hf_golden.py) with moefy's dump and ref_forward.py.

usage: compare_golden.py ROOT MOEFY
For every folder under ROOT with hf_logits.safetensors: runs `MOEFY forward
DIR --ids ... --dump` and ref_forward.py with the ids recorded in the golden
file, and prints the max abs difference of logits and hooks on the non-padded
positions (moefy vs HF, reference vs HF). Exit 1 if any moefy diff > 1e-4.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ref_forward  # noqa: E402
import st_io  # noqa: E402


def maxdiff(a, b, lens):
    m = 0.0
    for k in a:
        if k not in b:
            continue
        for i, n in enumerate(lens):
            m = max(m, float(np.abs(a[k][i, :n].astype(np.float64) - b[k][i, :n]).max()))
    return m


def main():
    root, moefy = sys.argv[1], sys.argv[2]
    bad = 0
    for d, _, files in sorted(os.walk(root)):
        if "hf_logits.safetensors" not in files:
            continue
        gold = st_io.read_f32(os.path.join(d, "hf_logits.safetensors"))
        meta = st_io.read(os.path.join(d, "hf_logits.safetensors"))[1]
        seqs = json.loads(meta.get("ids", "[[5,17,3,99,42,7,1,64,23],[8,9,10,11,100]]"))
        lens = [len(s) for s in seqs]
        args = sum((["--ids", ",".join(map(str, s))] for s in seqs), [])
        with tempfile.TemporaryDirectory() as tmp:
            dump, ref = os.path.join(tmp, "m.safetensors"), os.path.join(tmp, "r.safetensors")
            r = subprocess.run([moefy, "forward", d] + args + ["--dump", dump], capture_output=True, text=True)
            dm = maxdiff(st_io.read_f32(dump), gold, lens) if r.returncode == 0 else float("inf")
            ref_forward.main([d] + args + ["--out", ref])
            dr = maxdiff(st_io.read_f32(ref), gold, lens)
        bad += dm > 1e-4
        print("%-70s moefy-HF %.3g  ref-HF %.3g%s" % (d, dm, dr, "" if dm <= 1e-4 else "  <-- FAIL"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
