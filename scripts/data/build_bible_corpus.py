#!/usr/bin/env python3
"""Rebuilds data/corpus/bible-en-es/ (English -> Spanish, verse-aligned) from the
Debian SWORD modules engWEB2015eb (World English Bible, package sword-text-web)
and spaRV1909eb (Reina-Valera 1909, package sword-text-sparv), read with
diatheke (package diatheke). Both texts are in the public domain.

    python3 scripts/data/build_bible_corpus.py [--out DIR] [--seed N] [--fraction F]

Output (DIR, default data/corpus/bible-en-es):
    train.tsv valid.tsv test.tsv          source<TAB>target (English<TAB>Spanish)
    train.refs.tsv valid.refs.tsv test.refs.tsv
                                          line i: book<TAB>chapter<TAB>verse of
                                          pair i (book = OSIS id, the category)
    stats.json                            the counts quoted in README.md

How the text is read and cleaned (why each step exists):
  - diatheke -f internal prints the module's raw OSIS, one verse per line, as
    "<preverse markup>Book C:V: <verse markup>". One call per module for the
    whole range Gen 1:1-Rev 22:21 (about 4 s) instead of one per verse.
  - Markup is removed: <w savlm="strong:H1234"> (Strong's numbers), notes
    (footnotes), titles (section headings), <speaker> labels, quotation, line
    and paragraph milestones. The module text sometimes has no space where a
    removed element stood between two words ("allí<transChange>también" in
    the RV 1909, "God<note/>created" in the WEB); a space is inserted there.
  - The WEB's last verse (Rev 22:21) carries the module's glossary after the
    end-of-book marker; text after an end-of-book or glossary <div> is cut.
  - Pre-verse material is ignored because diatheke repeats a stale heading
    before later verses when iterating a range; the WEB's canonical psalm
    superscriptions (<title type="psalm">, part of verse 1 in the RV 1909 and
    the KJV versification) are read with one single-verse call per psalm and
    put in front of verse 1, so both sides of Psalms C:1 carry the title.
  - Pairs are aligned by reference (book, chapter, verse). The modules use
    different versifications (NRSVA and KJV): references present in one
    module only, and verses that are empty after cleaning, are dropped and
    counted. Only the 66 books both modules have are used.
  - Splits: whole chapters, stratified over books: each book gives
    fraction * (its chapter count) chapters to valid and as many to test, the
    integer parts first, the remainders by largest fractional part (ties by a
    seeded hash); which chapters, by a seeded shuffle within the book.
"""
import argparse
import hashlib
import html
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

SOURCE_MODULE = "engWEB2015eb"
TARGET_MODULE = "spaRV1909eb"

# diatheke's English book names (locale en) and the OSIS ids used as labels.
BOOKS = [
    ("Genesis", "Gen"), ("Exodus", "Exod"), ("Leviticus", "Lev"), ("Numbers", "Num"), ("Deuteronomy", "Deut"),
    ("Joshua", "Josh"), ("Judges", "Judg"), ("Ruth", "Ruth"), ("I Samuel", "1Sam"), ("II Samuel", "2Sam"),
    ("I Kings", "1Kgs"), ("II Kings", "2Kgs"), ("I Chronicles", "1Chr"), ("II Chronicles", "2Chr"),
    ("Ezra", "Ezra"), ("Nehemiah", "Neh"), ("Esther", "Esth"), ("Job", "Job"), ("Psalms", "Ps"),
    ("Proverbs", "Prov"), ("Ecclesiastes", "Eccl"), ("Song of Solomon", "Song"), ("Isaiah", "Isa"),
    ("Jeremiah", "Jer"), ("Lamentations", "Lam"), ("Ezekiel", "Ezek"), ("Daniel", "Dan"), ("Hosea", "Hos"),
    ("Joel", "Joel"), ("Amos", "Amos"), ("Obadiah", "Obad"), ("Jonah", "Jonah"), ("Micah", "Mic"),
    ("Nahum", "Nah"), ("Habakkuk", "Hab"), ("Zephaniah", "Zeph"), ("Haggai", "Hag"), ("Zechariah", "Zech"),
    ("Malachi", "Mal"), ("Matthew", "Matt"), ("Mark", "Mark"), ("Luke", "Luke"), ("John", "John"),
    ("Acts", "Acts"), ("Romans", "Rom"), ("I Corinthians", "1Cor"), ("II Corinthians", "2Cor"),
    ("Galatians", "Gal"), ("Ephesians", "Eph"), ("Philippians", "Phil"), ("Colossians", "Col"),
    ("I Thessalonians", "1Thess"), ("II Thessalonians", "2Thess"), ("I Timothy", "1Tim"),
    ("II Timothy", "2Tim"), ("Titus", "Titus"), ("Philemon", "Phlm"), ("Hebrews", "Heb"), ("James", "Jas"),
    ("I Peter", "1Pet"), ("II Peter", "2Pet"), ("I John", "1John"), ("II John", "2John"),
    ("III John", "3John"), ("Jude", "Jude"), ("Revelation of John", "Rev"),
]
BOOK_ID = dict(BOOKS)
BOOK_ORDER = {osis: i for i, (_, osis) in enumerate(BOOKS)}

# A verse label: one of the 66 names (longest first, so "II John" wins over
# "John"), preceded by the start of the line, whitespace or the end of a tag.
_NAMES = sorted(BOOK_ID, key=len, reverse=True)
LABEL = re.compile(r"(?:^|(?<=[\s>]))(" + "|".join(re.escape(n) for n in _NAMES) + r") (\d+):(\d+): ")
# Any verse label, also of books outside the 66 (deuterocanon), to count them.
ANY_LABEL = re.compile(r"(?:^|(?<=[\s>]))[1-4A-Z][^<>:]*? \d+:\d+: ")

END_OF_BOOK = re.compile(r'<div\b[^>]*\b(?:eID="[^"]*"[^>]*type="book"|type="glossary")[^>]*>')
DROP_ELEMENTS = [re.compile(p, re.S) for p in (r"<title\b[^>]*/>", r"<title\b[^>]*>.*?</title>",
                                                 r"<speaker\b[^>]*>.*?</speaker>")]
NOTE = re.compile(r"<note\b[^>]*/>|<note\b[^>]*>.*?</note>", re.S)
TAG = re.compile(r"<[^>]*>")
MARK = "\x01"
# Where a removed element stood between these, the words need a space.
SPACE_BEFORE_OK = set(",;:.!?”)]»")
SPACE_AFTER_OK = set("“‘¿¡([«")


def diatheke(module, key, fmt="internal"):
    # No -o filters: the internal format is the module's raw OSIS; the markup
    # is removed by clean().
    cmd = ["diatheke", "-b", module, "-f", fmt, "-k", key]
    out = subprocess.run(cmd, check=True, capture_output=True).stdout.decode("utf-8")
    return out


def clean(raw):
    """Raw OSIS of one verse -> plain text with normalised whitespace."""
    m = END_OF_BOOK.search(raw)
    if m:
        raw = raw[: m.start()]
    for p in DROP_ELEMENTS:
        raw = p.sub(MARK, raw)
    raw = NOTE.sub(MARK, raw)
    raw = TAG.sub(MARK, raw)
    if "<" in raw or ">" in raw:
        raise ValueError(f"unbalanced markup left in {raw!r}")
    raw = html.unescape(raw)
    out = []
    i = 0
    while i < len(raw):
        if raw[i] != MARK:
            out.append(raw[i])
            i += 1
            continue
        while i < len(raw) and raw[i] == MARK:
            i += 1
        prev = out[-1] if out else " "
        nxt = raw[i] if i < len(raw) else " "
        if not prev.isspace() and not nxt.isspace():
            if (prev.isalnum() or prev in SPACE_BEFORE_OK) and (nxt.isalnum() or nxt in SPACE_AFTER_OK):
                out.append(" ")
    return " ".join("".join(out).split())


def read_module(module):
    """{(osis, chapter, verse): raw verse markup} of the 66 books, counts."""
    text = diatheke(module, "Gen 1:1-Rev 22:21")
    verses = {}
    other = 0
    for line in text.split("\n"):
        m = LABEL.search(line)
        if not m:
            if ANY_LABEL.search(line):
                other += 1
            elif line.strip() and line.strip() != f"({module})":
                raise ValueError(f"{module}: unexpected line without a verse label: {line[:120]!r}")
            continue
        key = (BOOK_ID[m.group(1)], int(m.group(2)), int(m.group(3)))
        if key in verses:
            raise ValueError(f"{module}: verse {key} printed twice")
        verses[key] = line[m.end():]
    return verses, other


def psalm_titles(module, chapters):
    """{psalm: superscription text} from single-verse calls (see the docstring)."""
    titles = {}
    for c in chapters:
        out = diatheke(module, f"Psalms {c}:1")
        m = LABEL.search(out)
        pre = out[: m.start()] if m else ""
        t = re.search(r'<title\b[^>]*type="psalm"[^>]*>(.*?)</title>', pre, re.S)
        if t:
            titles[c] = clean(t.group(1))
    return titles


def choose_heldout(chapters_by_book, fraction, seed):
    """{(book, chapter): 'valid'|'test'} for whole chapters, stratified over books."""
    def h(*parts):
        return hashlib.sha256(("%d|" % seed + "|".join(map(str, parts))).encode()).hexdigest()

    books = sorted(chapters_by_book, key=lambda b: BOOK_ORDER[b])
    total = sum(len(chapters_by_book[b]) for b in books)
    want = round(fraction * total)
    quota = {b: int(fraction * len(chapters_by_book[b])) for b in books}
    rest = want - sum(quota.values())
    by_remainder = sorted(books, key=lambda b: (-(fraction * len(chapters_by_book[b]) - quota[b]), h("book", b)))
    for b in by_remainder[:max(rest, 0)]:
        quota[b] += 1
    assign = {}
    for b in books:
        chs = sorted(chapters_by_book[b])
        rng = random.Random(int(h("shuffle", b)[:16], 16))
        rng.shuffle(chs)
        # valid and test take the same quota from the shuffled chapters.
        k = quota[b]
        for c in chs[:k]:
            assign[(b, c)] = "valid"
        for c in chs[k:2 * k]:
            assign[(b, c)] = "test"
    return assign


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--out", default=os.path.join(root, "data", "corpus", "bible-en-es"))
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--fraction", type=float, default=0.03, help="chapters held out for valid and for test, each")
    args = ap.parse_args()
    if shutil.which("diatheke") is None:
        sys.exit("build_bible_corpus: diatheke not found; install it with: bash scripts/setup.sh --corpus")

    src_raw, src_other = read_module(SOURCE_MODULE)
    tgt_raw, tgt_other = read_module(TARGET_MODULE)
    titles = psalm_titles(SOURCE_MODULE, sorted({c for (b, c, v) in src_raw if b == "Ps"}))

    stats = {
        "source_module": SOURCE_MODULE, "target_module": TARGET_MODULE, "seed": args.seed,
        "fraction": args.fraction,
        "source_verses": len(src_raw), "target_verses": len(tgt_raw),
        "source_verses_outside_66_books": src_other, "target_verses_outside_66_books": tgt_other,
        "psalm_titles_added": len(titles),
    }
    src, tgt = {}, {}
    empty_src = empty_tgt = 0
    empty_lists = {"empty_source_list": [], "empty_target_list": []}
    for k, raw in src_raw.items():
        t = clean(raw)
        if k[0] == "Ps" and k[2] == 1 and k[1] in titles:
            t = (titles[k[1]] + " " + t).strip()
        if t:
            src[k] = t
        else:
            empty_src += 1
            empty_lists["empty_source_list"].append("%s %d:%d" % k)
    for k, raw in tgt_raw.items():
        t = clean(raw)
        if t:
            tgt[k] = t
        else:
            empty_tgt += 1
            empty_lists["empty_target_list"].append("%s %d:%d" % k)
    only_src = sorted(set(src_raw) - set(tgt_raw), key=lambda k: (BOOK_ORDER[k[0]], k[1], k[2]))
    only_tgt = sorted(set(tgt_raw) - set(src_raw), key=lambda k: (BOOK_ORDER[k[0]], k[1], k[2]))
    both = set(src_raw) & set(tgt_raw)
    keys = sorted(set(src) & set(tgt), key=lambda k: (BOOK_ORDER[k[0]], k[1], k[2]))
    stats.update({
        "empty_source_verses": empty_src, "empty_target_verses": empty_tgt,
        "refs_in_source_only": len(only_src), "refs_in_target_only": len(only_tgt),
        "refs_in_source_only_list": ["%s %d:%d" % k for k in only_src],
        "refs_in_target_only_list": ["%s %d:%d" % k for k in only_tgt],
        **empty_lists,
        "refs_in_both": len(both),
        "dropped_empty_pairs": len(both) - len(keys),
        "pairs": len(keys),
    })
    for k in keys:
        for t in (src[k], tgt[k]):
            if "\t" in t or "\n" in t or re.search(r"<|>|\b[GH]\d{3,4}\b", t):
                raise ValueError(f"{k}: markup or tab left after cleaning: {t!r}")

    chapters = {}
    for b, c, v in keys:
        chapters.setdefault(b, set()).add(c)
    assign = choose_heldout(chapters, args.fraction, args.seed)
    splits = {"train": [], "valid": [], "test": []}
    for k in keys:
        splits[assign.get((k[0], k[1]), "train")].append(k)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".bible-en-es.", dir=os.path.dirname(os.path.abspath(args.out)))
    try:
        per_split = {}
        for name, ks in splits.items():
            with open(os.path.join(tmp, name + ".tsv"), "w", encoding="utf-8", newline="\n") as f:
                for k in ks:
                    f.write(src[k] + "\t" + tgt[k] + "\n")
            with open(os.path.join(tmp, name + ".refs.tsv"), "w", encoding="utf-8", newline="\n") as f:
                for k in ks:
                    f.write("%s\t%d\t%d\n" % k)
            chs = sorted({(k[0], k[1]) for k in ks}, key=lambda x: (BOOK_ORDER[x[0]], x[1]))
            per_split[name] = {
                "pairs": len(ks),
                "chapters": len(chs),
                "books": len({k[0] for k in ks}),
                "source_tokens": sum(len(src[k].split()) for k in ks),
                "target_tokens": sum(len(tgt[k].split()) for k in ks),
                "chapter_list": ["%s %d" % c for c in chs] if name != "train" else [],
            }
        stats["splits"] = per_split
        with open(os.path.join(tmp, "stats.json"), "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=1, ensure_ascii=False)
            f.write("\n")
        # Keep README.md; replace the generated files.
        os.makedirs(args.out, exist_ok=True)
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(args.out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, s in per_split.items():
        print(f"{name}: {s['pairs']} pairs, {s['chapters']} chapters, {s['books']} books, "
              f"{s['source_tokens']} en / {s['target_tokens']} es whitespace tokens")
    print(f"dropped: {empty_src} empty {SOURCE_MODULE} verses, {empty_tgt} empty {TARGET_MODULE} verses, "
          f"{len(only_src)} refs only in {SOURCE_MODULE}, {len(only_tgt)} only in {TARGET_MODULE}; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
