// A few kilobytes of original mixed text (English prose, C++ and Python code, Chinese, a little
// Japanese) on which MakeSyntheticVocab trains its BPE merges, so that generated test models have
// a vocabulary that tokenizes ordinary prompts into multi-byte tokens.
#pragma once

#include <string_view>

namespace tritmoe {

std::string_view SyntheticTrainingText();

}  // namespace tritmoe
