#!/usr/bin/env python3
"""Checks the layering of analysis/ (moefy_core) and prints its folder graph.

Reads every #include "analysis/<folder>/..." in analysis/**, app/cli/** and
views/** and checks:
  * the folders of analysis/ form no include cycle (a folder may include itself)
    other than through the edges listed in KNOWN_CYCLE_EDGES (today's debt);
  * analysis/ and app/cli/ include no Qt header (<Q...>, <qt...>) and nothing of views/;
  * analysis/ includes nothing of app/.
Prints the folder graph as a Mermaid flowchart (--mermaid, the form in
docs/DEVELOPING.md) or as "a -> b" lines. Exit 1 on a violation.
usage: scripts/check_layers.py [--mermaid] [REPO]
"""
import os
import re
import sys

# Folder edges allowed to close a cycle, each with the files that make it. It
# is empty: the last three (model -> moe, moe -> eval, moe -> route) were paid
# off by the experts/, calibrate/ and checkpoint/ folders. Keep it empty; the
# check fails on any cycle, and says so when a listed edge is gone.
KNOWN_CYCLE_EDGES = {}

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def sources(root, sub):
    for dirpath, _, files in os.walk(os.path.join(root, sub)):
        for f in files:
            if f.endswith((".h", ".cpp", ".inc")):
                yield os.path.join(dirpath, f)


def folder_of(path, root):
    rel = os.path.relpath(path, os.path.join(root, "analysis"))
    return rel.split(os.sep)[0]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = os.path.abspath(args[0] if args else os.path.join(os.path.dirname(__file__), ".."))
    problems = []
    graph = {}
    for path in sources(root, "analysis"):
        src = folder_of(path, root)
        graph.setdefault(src, set())
        text = open(path, encoding="utf-8", errors="replace").read()
        for kind, inc in INCLUDE.findall(text):
            rel = os.path.relpath(path, root)
            if kind == "<" and re.match(r"(Q[A-Z]|qt|Qt)", inc):
                problems.append(f"{rel}: includes Qt header <{inc}>")
            if inc.startswith(("views/", "app/")):
                problems.append(f"{rel}: includes {inc} (analysis/ depends on nothing above it)")
            m = re.match(r"analysis/([^/]+)/", inc)
            if m and m.group(1) != src:
                graph[src].add(m.group(1))
    for path in sources(root, os.path.join("app", "cli")):
        text = open(path, encoding="utf-8", errors="replace").read()
        for kind, inc in INCLUDE.findall(text):
            rel = os.path.relpath(path, root)
            if (kind == "<" and re.match(r"(Q[A-Z]|qt|Qt)", inc)) or inc.startswith("views/"):
                problems.append(f"{rel}: the CLI includes {inc} (it never links Qt)")

    notes = []
    for edge, why in KNOWN_CYCLE_EDGES.items():
        if edge[1] not in graph.get(edge[0], ()):
            notes.append(f"known edge {edge[0]} -> {edge[1]} is gone; remove it from KNOWN_CYCLE_EDGES")
    checked = {a: {b for b in bs if (a, b) not in KNOWN_CYCLE_EDGES} for a, bs in graph.items()}

    # Cycle check: depth-first search, reporting one cycle per back edge.
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(checked.get(n, ())):
            if state.get(m) == 1:
                cyc = stack[stack.index(m):] + [m]
                problems.append("include cycle between analysis/ folders: " + " -> ".join(cyc))
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)

    if "--mermaid" in sys.argv:
        print("```mermaid\nflowchart BT")
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print(f"  {a} -.-> {b}" if (a, b) in KNOWN_CYCLE_EDGES else f"  {a} --> {b}")
        print("```")
    else:
        for a in sorted(graph):
            print(f"{a} -> {', '.join(sorted(graph[a])) or '(nothing)'}")
    for n in notes:
        print("check_layers: note: " + n, file=sys.stderr)
    for p in problems:
        print("check_layers: " + p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
