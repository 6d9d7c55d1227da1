#!/usr/bin/env python3
"""Independent reference for the DeepSeek-V3 pre-tokenizer, using the third-party `regex` module.

Reads the three patterns from runtime/deepseek_v3_pretokenizer_regex.txt (argv[1]), generates a
fixed pseudo-random corpus of strings plus some hand-picked ones, splits each one (each regex in
turn over every piece so far, keeping matches and the gaps between them), and prints
{"cases": [{"text": ..., "pieces": [...]}, ...]} as JSON. Exits with 77 when `regex` is missing.
"""
import json
import random
import sys

try:
    import regex
except ImportError:
    sys.exit(77)


def load_patterns(path):
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f if not line.startswith("#")]
    return [regex.compile(p) for p in lines if p]


def split(patterns, text):
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


def corpus():
    pool = (list("abcXYZ019 '\"!?.,;:-_()[]{}<>/\\@#$%^&*+=|~`") + ["  ", "\n", "\r\n", "\t",
            "  \n", "é", "e\u0301", "ß", "Ω", "ж", "你", "好", "世", "界", "，", "。", "「", "」",
            "ひ", "カ", "ー", "한", "글", "١", "٢", "½", "²", "😀", "👍🏽", "€", "©", "\u00a0",
            "\u3000", "\u2028", "ﬁ", "Ａ", "ｂ", "१"])
    rng = random.Random(20250101)
    cases = ["Hello world", "I've been 2 places, 1234567 times!", "  leading", "trailing   ",
             "a\n\n\nb", "x = f(y) + 3.14159;\n\treturn x;", "我爱北京天安门，你呢？", "ひらがなとカタカナ",
             "emoji 😀😀 and 👍🏽!", "mixed中文and English123abc", "$1,234.56", "don't stop",
             "line1\r\nline2\r\n", "    def f(self):\n        pass\n"]
    for _ in range(400):
        n = rng.randint(1, 24)
        cases.append("".join(rng.choice(pool) for _ in range(n)))
    return cases


def main():
    patterns = load_patterns(sys.argv[1])
    assert len(patterns) == 3, patterns
    cases = [{"text": t, "pieces": split(patterns, t)} for t in corpus()]
    json.dump({"cases": cases}, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
