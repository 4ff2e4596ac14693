#!/usr/bin/env python3
"""Independent reference for BLEU and chrF as sacreBLEU 2.x computes them with
its defaults, written from the definitions (Papineni et al. 2002; Popović 2015;
the 13a tokenisation of mteval-v13a.pl as sacreBLEU's tokenizer_13a applies it;
Chen & Cherry 2014 for the 'exp' smoothing). It does not import sacrebleu
(not installed) and uses Python's re and collections.Counter, where the C++
(analysis/eval/bleu.cpp) scans code points by hand.

    bleu_ref.py CASES.json OUT.json     CASES: {"corpora": [{"name", "hyps", "refs"}]}
                                        (refs: one string per hypothesis)
    bleu_ref.py --self-test             checks against values published in
                                        sacreBLEU's README and test suite

OUT.json: {"corpora": [{"name", "bleu_exp": {...}, "bleu_none": {...},
"chrf": x, "sentences": [{"tok_hyp", "bleu", "chrf"}]}]} where a BLEU entry is
{"score", "precisions", "bp", "ratio", "hyp_len", "ref_len", "matches", "totals"}.
"""
import json
import math
import re
import sys
from collections import Counter

MAX_ORDER = 4
CHAR_ORDER = 6
BETA = 2

# mteval-v13a: punctuation that is always split off (ASCII except ' , - .),
# then '.' and ',' unless between digits, then '-' after a digit.
_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),
]


def tokenize_13a(line):
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = " " + line + " "
    for rx, repl in _RULES:
        line = rx.sub(repl, line)
    return line.split()


def word_ngrams(tokens):
    c = Counter()
    for n in range(1, MAX_ORDER + 1):
        for i in range(len(tokens) - n + 1):
            c[tuple(tokens[i:i + n])] += 1
    return c


def bleu_stats(hyp, refs):
    """[hyp_len, ref_len, matches(4), totals(4)]; several references: the
    closest reference length (shorter on ties) and the maximum count of each
    n-gram over the references."""
    h = tokenize_13a(hyp.rstrip())
    hc = word_ngrams(h)
    ref_counts = Counter()
    ref_lens = []
    for r in refs:
        t = tokenize_13a(r.rstrip())
        ref_lens.append(len(t))
        for g, k in word_ngrams(t).items():
            ref_counts[g] = max(ref_counts[g], k)
    ref_len = min(ref_lens, key=lambda L: (abs(len(h) - L), L))
    matches = [0] * MAX_ORDER
    totals = [0] * MAX_ORDER
    for g, k in hc.items():
        totals[len(g) - 1] += k
        matches[len(g) - 1] += min(k, ref_counts.get(g, 0))
    return [len(h), ref_len] + matches + totals


def bleu_score(stats, smooth, effective_order):
    hyp_len, ref_len = stats[0], stats[1]
    matches, totals = stats[2:2 + MAX_ORDER], stats[2 + MAX_ORDER:]
    if hyp_len >= ref_len:
        bp = 1.0
    else:
        bp = math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0
    p = [0.0] * MAX_ORDER
    out = {"bp": bp, "ratio": hyp_len / ref_len if ref_len else 0.0, "hyp_len": hyp_len, "ref_len": ref_len,
           "matches": list(matches), "totals": list(totals), "precisions": p, "score": 0.0}
    if sum(matches) == 0:
        return out
    # Orders up to the first with no hypothesis n-gram; the k-th zero-match
    # order gets 1/2^k of a match under 'exp' smoothing.
    orders = MAX_ORDER
    zeros = 0
    for n in range(MAX_ORDER):
        if totals[n] == 0:
            break
        if effective_order:
            orders = n + 1
        if matches[n] > 0:
            p[n] = 100.0 * matches[n] / totals[n]
        elif smooth == "exp":
            zeros += 1
            p[n] = 100.0 / (2 ** zeros * totals[n])
    logs = [math.log(x) if x > 0 else -9999999999 for x in p[:orders]]
    out["score"] = bp * math.exp(math.fsum(logs) / orders)
    return out


def char_ngrams(text):
    s = "".join(text.split())
    return [Counter(s[i:i + n] for i in range(len(s) - n + 1)) for n in range(1, CHAR_ORDER + 1)]


def chrf_stats_one(hng, rng):
    st = []
    for h, r in zip(hng, rng):
        st += [sum(h.values()) if r else 0, sum(r.values()), sum(min(k, r[g]) for g, k in h.items() if g in r)]
    return st


def chrf_score(st):
    f = BETA ** 2
    ps, rs = [], []
    for n in range(CHAR_ORDER):
        nh, nr, nm = st[3 * n:3 * n + 3]
        if nh > 0 and nr > 0:
            ps.append(nm / nh)
            rs.append(nm / nr)
    if not ps:
        return 0.0
    P, R = sum(ps) / len(ps), sum(rs) / len(rs)
    return 100.0 * (1 + f) * P * R / (f * P + R) if P + R > 0 else 0.0


def chrf_stats(hyp, refs):
    """Several references: the statistics of the one with the best segment F."""
    hng = char_ngrams(hyp)
    best, best_f = None, -1.0
    for r in refs:
        st = chrf_stats_one(hng, char_ngrams(r))
        f = chrf_score(st)
        if f > best_f:
            best, best_f = st, f
    return best


def corpus(hyps, refsets):
    """refsets[i] = the references of hypothesis i."""
    bs = [bleu_stats(h, r) for h, r in zip(hyps, refsets)]
    cs = [chrf_stats(h, r) for h, r in zip(hyps, refsets)]
    bsum = [sum(x) for x in zip(*bs)] if bs else [0] * (2 + 2 * MAX_ORDER)
    csum = [sum(x) for x in zip(*cs)] if cs else [0] * (3 * CHAR_ORDER)
    return {
        "bleu_exp": bleu_score(bsum, "exp", False),
        "bleu_none": bleu_score(bsum, "none", False),
        "chrf": chrf_score(csum),
        "sentences": [{"tok_hyp": " ".join(tokenize_13a(h)), "bleu": bleu_score(b, "exp", True)["score"],
                       "chrf": chrf_score(c)} for h, b, c in zip(hyps, bs, cs)],
    }


def self_test():
    # sacreBLEU README (two references per segment): BLEU = 48.53 82.4/50.0/45.5/37.5
    # (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18), chrF2 = 59.73; 48.530827 in test_bleu.py.
    refs = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    sys_ = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    r = corpus(sys_, [list(x) for x in zip(*refs)])
    b = r["bleu_exp"]
    assert abs(b["score"] - 48.530827) < 1e-6, b
    assert [round(x, 1) for x in b["precisions"]] == [82.4, 50.0, 45.5, 37.5], b
    assert (round(b["bp"], 3), round(b["ratio"], 3), b["hyp_len"], b["ref_len"]) == (0.943, 0.944, 17, 18), b
    assert round(r["chrf"], 2) == 59.73, r["chrf"]
    # test_sentence_bleu.py (#98): exp smoothing, effective order, 13a: 8.493 (tolerance 1e-3 there).
    s = bleu_score(bleu_stats("Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;",
                              ["producţia de zahăr brut se exprimă în zahăr alb;"]), "exp", True)
    assert abs(s["score"] - 8.493) < 1e-3, s
    assert bleu_score(bleu_stats("this is a cat", ["okay thanks"]), "exp", True)["score"] == 0.0
    # test_chrf.py test_chrf_eff_order (the default, eps_smoothing=False; tolerance 1e-4 there).
    for h, rf, want in [(["aa"], ["ab"], 25.0), (["a", "b"], ["a", "c"], 50.0), (["a b c"], ["abc"], 100.0),
                        ([""], ["reference"], 0.0), (["a"], ["a"], 100.0), ([""], ["c"], 0.0)]:
        got = corpus(h, [[x] for x in rf])["chrf"]
        assert abs(got - want) < 1e-4, (h, rf, got, want)
    print("bleu_ref self-test: OK (sacreBLEU README 48.530827 / chrF2 59.73, sentence BLEU 8.493, chrF effective-order cases)")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    out = {"corpora": []}
    for c in cases["corpora"]:
        if len(c["hyps"]) != len(c["refs"]):
            sys.exit(f"{c['name']}: {len(c['hyps'])} hypotheses, {len(c['refs'])} references")
        r = corpus(c["hyps"], [[x] for x in c["refs"]])
        r["name"] = c["name"]
        out["corpora"].append(r)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
