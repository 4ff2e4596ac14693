#pragma once
// The option tables of `moefy train` and `moefy train-tokenizer`.
#include "analysis/common/options.h"
#include "analysis/train/bpe_trainer.h"
#include "analysis/train/trainer.h"

namespace moefy {

/// The options of `moefy train` (defaults from TrainOptions{}).
const OptionTable& trainOptionTable();
/// TrainOptions from validated values of trainOptionTable(); `corpus` is the
/// positional CORPUS. Throws ParameterError for a missing --config/--tokenizer/--out.
TrainOptions trainOptionsFrom(const OptionValues& values, const std::filesystem::path& corpus);

/// The options of `moefy train-tokenizer` (defaults from BpeTrainOptions{}).
const OptionTable& trainTokenizerOptionTable();
/// BpeTrainOptions from validated values of trainTokenizerOptionTable().
BpeTrainOptions bpeTrainOptionsFrom(const OptionValues& values);

}  // namespace moefy
