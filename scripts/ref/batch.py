#!/usr/bin/env python3
"""Runs several make_checkpoint.py / ref_forward.py commands in one process
(one torch import instead of one per command), for the tests.

usage: batch.py JOBS.json
JOBS.json is a list of argument lists whose first element names the script:
  [["make_checkpoint", "gpt2_relu", "/tmp/m"], ["ref_forward", "/tmp/m", "--ids", "1,2", "--out", "/tmp/r.safetensors"],
   ["t5_ref", "forward", "/tmp/t5", "--ids", "1,2", "--decoder-ids", "0,3", "--out", "/tmp/t5.safetensors"],
   ["moe_native_ref", "forward", "/tmp/mx", "--ids", "1,2", "--out", "/tmp/mx.safetensors", "--all-experts"],
   ["analyze_ref", "/tmp/mx", "--ids-file", "/tmp/s.ids", "--out", "/tmp/an.safetensors"]]
Stops at the first failing job, naming it, with exit status 1.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import analyze_ref  # noqa: E402
import make_checkpoint  # noqa: E402
import moe_native_ref  # noqa: E402
import ref_forward  # noqa: E402
import t5_ref  # noqa: E402

SCRIPTS = {"analyze_ref": analyze_ref.main, "make_checkpoint": make_checkpoint.main, "ref_forward": ref_forward.main, "t5_ref": t5_ref.main,
           "moe_native_ref": moe_native_ref.main}


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        try:
            rc = SCRIPTS[job[0]](job[1:])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
            if not isinstance(e.code, int):
                print(e.code, file=sys.stderr)
        if rc:
            print("batch.py: job failed: " + " ".join(job), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
