// Lookup tables of the IQ and TQ formats (llama.cpp's grids and sign tables), generated from
// experts/data/*.txt by tools/gen_tables.py. Provenance: experts/data/PROVENANCE.md.
#pragma once

#include <cstdint>

namespace tritmoe::tables {
#include "experts/quant_tables.inc"
}  // namespace tritmoe::tables
