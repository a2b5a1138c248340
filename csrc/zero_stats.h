// Zero-fraction statistics of weight tensors: plain C++ over pointers and sizes, no Python.
//
// A weight w counts as zero at threshold t when float64(|w|) <= t. Weights are float32 or float64,
// C-contiguous. Bad input throws InputError (the bindings turn it into ValueError).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "keys.h"

namespace onnxprune {

struct InputError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// One contiguous weight array seen as raw memory.
struct WeightSpan {
  const void* data;
  DType dtype;
  int64_t size;
};

// Throws unless every threshold is finite and >= 0 and the list is non-decreasing.
void check_thresholds(const double* t, int64_t k);

// Threshold keys for `dtype`, deduplicated: `unique` gets the distinct keys in increasing order and
// `index[k]` the position in `unique` of threshold k's key.
template <class Key>
void unique_threshold_keys(const double* t, int64_t k, std::vector<Key>& unique,
                           std::vector<int64_t>& index);

// out[k * rows + r] = fraction of row r of the (rows, cols) array with |w| <= t[k]; all K
// thresholds in about one read of the weights. t must satisfy check_thresholds.
void zero_fraction_sweep(WeightSpan w, int64_t rows, int64_t cols, const double* t, int64_t k,
                         double* out, int threads);

// For a conv weight (out_channels, in_per_group, spatial) with `groups` groups:
// out[c] = fraction of the weights that read input channel c (c < in_per_group * groups) with
// |w| <= t. Filters [g * out/groups, (g+1) * out/groups) read channels [g * in_per_group, ...).
void input_channel_zero_fractions(WeightSpan w, int64_t out_channels, int64_t in_per_group,
                                  int64_t spatial, int64_t groups, double t, double* out,
                                  int threads);

// counts[k] += number of weights in `w` with |w| <= t[k].
void add_zero_counts(WeightSpan w, const double* t, int64_t k, int64_t* counts, int threads);

// The float64 key of the rank-th smallest |w| (0-based) over all spans; NaN sorts last.
// rank must be below the total size.
int64_t kth_smallest_abs_key(const std::vector<WeightSpan>& spans, int64_t rank, int threads);

// 0-based rank of the weight whose |w| is the smallest threshold reaching `sparsity` (the fraction
// of weights with |w| <= t, computed as count / total in float64), or -1 when sparsity is 0 (t = 0).
// Throws when sparsity is outside [0, 1] or needs more than the `finite` weights that can be zero.
int64_t rank_for_sparsity(int64_t total, int64_t finite, double sparsity);

}  // namespace onnxprune
