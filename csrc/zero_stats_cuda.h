// The statistics of zero_stats.h computed on a CUDA device, for weights already in device memory.
// Results come back to host memory; `stream` is the producer's stream handle (0 for the default
// stream), so the kernels run after whatever wrote the weights.
#pragma once

#include <cstdint>
#include <vector>

#include "zero_stats.h"

namespace onnxprune::cuda {

// True when the CUDA runtime finds at least one usable device.
bool available();

void zero_fraction_sweep(WeightSpan w, int64_t rows, int64_t cols, const double* t, int64_t k,
                         double* out, uintptr_t stream);

void input_channel_zero_fractions(WeightSpan w, int64_t out_channels, int64_t in_per_group,
                                  int64_t spatial, int64_t groups, double t, double* out,
                                  uintptr_t stream);

void add_zero_counts(WeightSpan w, const double* t, int64_t k, int64_t* counts, uintptr_t stream);

int64_t kth_smallest_abs_key(const std::vector<WeightSpan>& spans, int64_t rank, uintptr_t stream);

}  // namespace onnxprune::cuda
