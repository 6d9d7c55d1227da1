#!/usr/bin/python3
"""Checks dequant_np against the llama.cpp golden vectors, bit-exactly.

    tests/reference/test_dequant_np.py [testvector_dir]

Every tests/data/testvectors/decode_<TYPE>.txt (random blocks -> to_float) is checked; the
"quantized -> dequantized" pairs of the quant_<TYPE>_*.txt files are checked too (they cover F16
and BF16, which have no decode_ file). Prints one line per file and 'N passed, M failed';
exits non-zero on any failure.
"""

import glob
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dequant_np  # noqa: E402
from gguf_np import GGML_TYPES  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, "..", "data", "testvectors")


def parse_vector_file(path):
    """-> dict: type_id, sections {name: list of lines}."""
    sections = {}
    type_id = None
    cur = None
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                m = re.search(r"ggml_type_id=(\d+)", line)
                if m:
                    type_id = int(m.group(1))
                m = re.match(r"#\s*([A-Za-z_ 0-9]+?)\s*(\(.*\))?:", line)
                cur = None
                if m:
                    head = m.group(1).strip().lower()
                    if head in ("blocks", "quantized", "dequantized", "input", "imatrix"):
                        cur = head
                        sections[cur] = []
                continue
            if cur is not None:
                sections[cur].append(line)
    return type_id, sections


def hex_bytes(lines):
    return np.frombuffer(bytes.fromhex("".join(lines)), dtype=np.uint8)


def hex_words(lines):
    return np.array([int(w, 16) for ln in lines for w in ln.split()], dtype=np.uint32)


def check_file(path):
    type_id, sec = parse_vector_file(path)
    if type_id is None:
        return None, "no ggml_type_id in header"
    name = GGML_TYPES[type_id][0]
    raw_key = "blocks" if "blocks" in sec else "quantized"
    if raw_key not in sec or "dequantized" not in sec:
        return None, "no %s/dequantized sections" % raw_key
    if name not in dequant_np._DECODERS:
        return None, "no decoder for %s" % name
    raw = hex_bytes(sec[raw_key])
    want = hex_words(sec["dequantized"])
    got = dequant_np.dequantize(raw, type_id).view(np.uint32)
    if got.size != want.size:
        return False, "%s: %d values decoded, %d expected" % (name, got.size, want.size)
    bad = np.nonzero(got != want)[0]
    if bad.size:
        i = bad[0]
        return False, "%s: %d of %d values differ; first at %d: got 0x%08x (%r) want 0x%08x (%r)" % (
            name, bad.size, want.size, i, got[i], got.view(np.float32)[i], want[i],
            want.view(np.float32)[i])
    return True, "%s: %d values bit-exact" % (name, want.size)


def main():
    vdir = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DIR
    files = sorted(glob.glob(os.path.join(vdir, "decode_*.txt"))) + \
        sorted(glob.glob(os.path.join(vdir, "quant_*.txt")))
    decode_files = [f for f in files if os.path.basename(f).startswith("decode_")]
    if not decode_files:
        print("no decode_*.txt files found in %s" % vdir)
        print("0 passed, 1 failed")
        return 1
    passed = failed = 0
    for f in files:
        ok, msg = check_file(f)
        base = os.path.basename(f)
        if ok is None:
            if base.startswith("decode_"):
                failed += 1
                print("FAIL %s: %s" % (base, msg))
            else:
                print("skip %s: %s" % (base, msg))
            continue
        if ok:
            passed += 1
            print("ok   %s: %s" % (base, msg))
        else:
            failed += 1
            print("FAIL %s: %s" % (base, msg))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
