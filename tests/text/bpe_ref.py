#!/usr/bin/env python3
"""Independent reference encoder for byte-level BPE with the DeepSeek-V3 pre-tokenizer.

Input (JSON on stdin): {"pattern_file": path, "tokens": [...], "merges": ["a b", ...],
"texts": [...]}. Output (JSON on stdout): {"ids": [[...], ...]}, one id list per text.
Pre-tokenization uses the third-party `regex` module on the pattern file; BPE is the classic
formulation: repeatedly take the adjacent pair with the lowest merge rank and merge every
occurrence of it, left to right. Exits with 77 when `regex` is missing.
"""
import json
import sys

try:
    import regex
except ImportError:
    sys.exit(77)


def byte_alphabet():
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def pre_tokenize(patterns, text):
    pieces = [text] if text else []
    for pat in patterns:
        out = []
        for piece in pieces:
            last = 0
            for m in pat.finditer(piece):
                if m.start() > last:
                    out.append(piece[last:m.start()])
                out.append(m.group())
                last = m.end()
            if last < len(piece):
                out.append(piece[last:])
        pieces = out
    return pieces


def bpe(symbols, ranks):
    while len(symbols) > 1:
        pairs = [(ranks.get((symbols[i], symbols[i + 1])), i) for i in range(len(symbols) - 1)]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        best = min(pairs)[0]
        first, second = next((symbols[i], symbols[i + 1]) for r, i in pairs if r == best)
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                merged.append(first + second)
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def main():
    req = json.load(sys.stdin)
    with open(req["pattern_file"], encoding="utf-8") as f:
        patterns = [regex.compile(l.rstrip("\n")) for l in f if l.strip() and not l.startswith("#")]
    ids = {t: i for i, t in reversed(list(enumerate(req["tokens"])))}
    ranks = {}
    for r, m in enumerate(req["merges"]):
        a, b = m.split(" ", 1)
        ranks.setdefault((a, b), r)
    alphabet = byte_alphabet()
    out = []
    for text in req["texts"]:
        seq = []
        for piece in pre_tokenize(patterns, text):
            symbols = [alphabet[b] for b in piece.encode("utf-8")]
            seq.extend(ids[s] for s in bpe(symbols, ranks))
        out.append(seq)
    json.dump({"ids": out}, sys.stdout)


if __name__ == "__main__":
    main()
