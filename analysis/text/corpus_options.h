#pragma once
// The option table of `moefy corpus` (corpus description and the sequences
// the recorder would cut).
#include "analysis/common/options.h"
#include "analysis/text/corpus.h"

namespace moefy {

/// The options of `moefy corpus` (defaults from CorpusOptions{} and SequenceOptions{}).
const OptionTable& corpusOptionTable();
/// CorpusOptions from validated values of corpusOptionTable().
CorpusOptions corpusOptionsFrom(const OptionValues& values);
/// SequenceOptions from validated values of corpusOptionTable().
SequenceOptions sequenceOptionsFrom(const OptionValues& values);

}  // namespace moefy
