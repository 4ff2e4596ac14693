#pragma once
// Python snippets that load an artefact: the studio's Start page copies them
// ("Copy Python"), so that a figure's data can be taken further in a notebook.
// Each snippet is self-contained (json, os, struct and numpy only: a 12-line
// safetensors reader stands in for `safetensors.numpy.load_file`, which it
// names, since the package is often not installed) and uses the file and
// tensor names of docs/formats.md, as the writers in analysis/ write them.
#include <string>
#include <vector>

namespace moefy {

/// The artefact kinds pythonSnippet knows, in pipeline order: "model",
/// "corpus", "recording", "partition", "router", "evaluation", "export",
/// "front", "analysis".
const std::vector<std::string>& pythonSnippetKinds();

/// A Python 3 snippet that loads the artefact of `kind` (pythonSnippetKinds)
/// at the absolute path `path` and prints a few of its figures:
///  - model: config.json and the tensor names and shapes of its *.safetensors
///    (headers only, no weights read);
///  - corpus: the files of a corpus folder, or the first lines of a corpus file;
///  - recording: manifest.json, `<site>.count` / `.sum` / `.max` /
///    `.active_hist` of stats.safetensors and `<site>.coact` of
///    coact.safetensors (when present; a version 2 recording's packed upper
///    triangle is expanded to the full matrix) for the first recorded site;
///  - partition: partition.json and every site's `<site>.labels` and
///    `<site>.perm` of labels.safetensors, with the expert sizes;
///  - router: router.json and its kind's tensors of router.safetensors
///    (similarity `centroids`, mlp `w1` `w2`, sigmoid `w1`, dynamic-k `w1`
///    `b1`; oracle routers have none);
///  - evaluation: eval.json's `results` as a list of (name, fraction,
///    perplexity, top1_agreement, ffn_flops_fraction) tuples and the reference;
///  - export: config.json's `moefication` block and each site's `<site>.labels`
///    of moe.safetensors with the expert sizes;
///  - front: front.json's points per method and the best method per budget;
///  - analysis: analysis.json and the first site's `<site>.sim.up`,
///    `<site>.usage` (when analysed on a corpus) of analysis.safetensors.
/// `path` is embedded as a Python string literal (JSON-escaped). Returns ""
/// for an unknown kind. Pure and thread-safe; reads nothing.
std::string pythonSnippet(const std::string& kind, const std::string& path);

}  // namespace moefy
