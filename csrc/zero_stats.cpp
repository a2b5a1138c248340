// CPU kernels for zero-fraction statistics (OpenMP across rows or chunks).
//
// A sweep over K thresholds reads each weight once: the weight's key is mapped to j, the number
// of distinct threshold keys below it, through a bucket table over the thresholds' key range
// (a shift, one table load and at most a few compares), and j is counted in a per-row histogram;
// the prefix sums of the histogram give the zero counts at every threshold.
#include "zero_stats.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace onnxprune {

int32_t threshold_key_f32(double t) {
  float f = static_cast<float>(t);
  if (std::isinf(f) || static_cast<double>(f) > t) f = std::nextafter(f, 0.0f);
  return abs_key(f);
}

int64_t threshold_key_f64(double t) { return t == 0.0 ? 0 : abs_key(t); }

void check_thresholds(const double* t, int64_t k) {
  for (int64_t i = 0; i < k; ++i) {
    if (!std::isfinite(t[i]) || t[i] < 0.0)
      throw InputError("thresholds must be finite and >= 0; got " + std::to_string(t[i]) +
                       " at position " + std::to_string(i));
    if (i > 0 && t[i] < t[i - 1])
      throw InputError("thresholds must be sorted in increasing order; position " +
                       std::to_string(i) + " (" + std::to_string(t[i]) + ") is below position " +
                       std::to_string(i - 1) + " (" + std::to_string(t[i - 1]) + ")");
  }
}

template <class Key>
void unique_threshold_keys(const double* t, int64_t k, std::vector<Key>& unique,
                           std::vector<int64_t>& index) {
  unique.clear();
  index.resize(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) {
    Key key = threshold_key<std::conditional_t<sizeof(Key) == 4, float, double>>(t[i]);
    if (unique.empty() || unique.back() != key) unique.push_back(key);
    index[static_cast<size_t>(i)] = static_cast<int64_t>(unique.size()) - 1;
  }
}
template void unique_threshold_keys<int32_t>(const double*, int64_t, std::vector<int32_t>&,
                                             std::vector<int64_t>&);
template void unique_threshold_keys<int64_t>(const double*, int64_t, std::vector<int64_t>&,
                                             std::vector<int64_t>&);

namespace {

int thread_count(int threads) {
#ifdef _OPENMP
  return threads > 0 ? threads : omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

// Maps a key to j = #{unique threshold keys < key}, in [0, M].
template <class Key>
class BucketIndex {
 public:
  static constexpr int64_t kMaxBuckets = int64_t{1} << 16;

  explicit BucketIndex(const std::vector<Key>& unique) {
    const int64_t m = static_cast<int64_t>(unique.size());
    base_ = unique.front();
    const uint64_t range = static_cast<uint64_t>(unique.back()) - static_cast<uint64_t>(base_);
    // Buckets no wider than the smallest gap hold at most one threshold, so one compare resolves
    // j; the table size caps the resolution when thresholds are closer than that.
    uint64_t min_gap = std::numeric_limits<uint64_t>::max();
    for (int64_t i = 1; i < m; ++i)
      min_gap = std::min(min_gap, static_cast<uint64_t>(unique[i]) - static_cast<uint64_t>(unique[i - 1]));
    int shift = 0;
    while (shift < 63 && (uint64_t{2} << shift) <= min_gap) ++shift;
    while ((range >> shift) + 1 > static_cast<uint64_t>(kMaxBuckets)) ++shift;
    shift_ = shift;
    buckets_ = static_cast<int64_t>(range >> shift) + 1;

    // Bucket 0 holds keys below base; bucket b in [1, buckets] holds base + [(b-1), b) << shift;
    // bucket buckets + 1 holds everything above.
    lo_.resize(static_cast<size_t>(buckets_ + 2));
    lo_[0] = 0;
    lo_[buckets_ + 1] = static_cast<uint32_t>(m);
    width_ = 0;
    for (int64_t b = 1; b <= buckets_; ++b) {
      const uint64_t first = static_cast<uint64_t>(base_) + (static_cast<uint64_t>(b - 1) << shift);
      const uint64_t last = first + ((uint64_t{1} << shift) - 1);
      const auto below = [&](uint64_t key) {
        return static_cast<int64_t>(
            std::lower_bound(unique.begin(), unique.end(), key,
                             [](Key u, uint64_t v) { return static_cast<uint64_t>(u) < v; }) -
            unique.begin());
      };
      const int64_t lo = below(first), hi = below(last);
      lo_[static_cast<size_t>(b)] = static_cast<uint32_t>(lo);
      width_ = std::max(width_, hi - lo);
    }
    keys_ = unique;
    keys_.resize(static_cast<size_t>(m + width_ + 1), std::numeric_limits<Key>::max());
  }

  int64_t width() const { return width_; }

  // j for `key`, counting among at most W keys after the bucket's first (W >= width()).
  template <int W>
  inline uint32_t index(Key key) const {
    int64_t b = ((static_cast<int64_t>(key) - static_cast<int64_t>(base_)) >> shift_) + 1;
    b = b < 0 ? 0 : b;
    b = b > buckets_ + 1 ? buckets_ + 1 : b;
    const uint32_t lo = lo_[static_cast<size_t>(b)];
    uint32_t j = lo;
    for (int i = 0; i < W; ++i) j += keys_[lo + i] < key;
    return j;
  }

  // j for `key` by binary search, for thresholds too dense for the table.
  inline uint32_t index_search(Key key) const {
    const int64_t m = static_cast<int64_t>(keys_.size()) - width_ - 1;
    return static_cast<uint32_t>(std::lower_bound(keys_.begin(), keys_.begin() + m, key) -
                                 keys_.begin());
  }

 private:
  Key base_;
  int shift_;
  int64_t buckets_;
  int64_t width_;
  std::vector<uint32_t> lo_;
  std::vector<Key> keys_;
};

template <class T, int W>
void histogram_w(const T* p, int64_t n, const BucketIndex<typename KeyOf<T>::type>& index,
                 int64_t* hist) {
  for (int64_t i = 0; i < n; ++i) ++hist[index.template index<W>(abs_key(p[i]))];
}

// hist[j] += number of elements of p[0..n) with j distinct threshold keys below their key.
template <class T>
void histogram(const T* p, int64_t n, const BucketIndex<typename KeyOf<T>::type>& index,
               int64_t* hist) {
  switch (index.width()) {
    case 0:
    case 1: histogram_w<T, 1>(p, n, index, hist); return;
    case 2: histogram_w<T, 2>(p, n, index, hist); return;
    case 3:
    case 4: histogram_w<T, 4>(p, n, index, hist); return;
    default:
      for (int64_t i = 0; i < n; ++i) ++hist[index.index_search(abs_key(p[i]))];
  }
}

// Number of elements of p[0..n) whose key is <= tkey: a compare-and-add loop the compiler
// vectorises.
template <class T>
int64_t count_le(const T* p, int64_t n, typename KeyOf<T>::type tkey) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += abs_key(p[i]) <= tkey;
  return count;
}

// Few distinct thresholds: counting directly is cheaper than a histogram.
constexpr size_t kDirectMax = 4;

template <class T>
void sweep_typed(const T* w, int64_t rows, int64_t cols, const double* t, int64_t k, double* out,
                 int threads) {
  using Key = typename KeyOf<T>::type;
  std::vector<Key> unique;
  std::vector<int64_t> index;
  unique_threshold_keys<Key>(t, k, unique, index);
  if (rows == 0 || k == 0) return;
  const int64_t m = static_cast<int64_t>(unique.size());
  const int nt = thread_count(threads);
  const double denom = static_cast<double>(cols);

  const auto write_row = [&](int64_t r, const int64_t* zeros) {
    for (int64_t i = 0; i < k; ++i) out[i * rows + r] = static_cast<double>(zeros[index[i]]) / denom;
  };

  if (static_cast<size_t>(m) <= kDirectMax) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      int64_t zeros[kDirectMax];
      for (int64_t u = 0; u < m; ++u) zeros[u] = count_le(w + r * cols, cols, unique[u]);
      write_row(r, zeros);
    }
    return;
  }

  const BucketIndex<Key> bucket(unique);
  const auto prefix_sum = [m](int64_t* hist) {
    for (int64_t u = 1; u < m; ++u) hist[u] += hist[u - 1];
  };
  if (rows >= 2 * nt) {
#pragma omp parallel num_threads(nt)
    {
      std::vector<int64_t> hist(static_cast<size_t>(m + 1));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        std::fill(hist.begin(), hist.end(), 0);
        histogram(w + r * cols, cols, bucket, hist.data());
        prefix_sum(hist.data());
        write_row(r, hist.data());
      }
    }
    return;
  }
  // Few long rows: split each row across threads.
  std::vector<int64_t> total(static_cast<size_t>(m + 1));
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(total.begin(), total.end(), 0);
#pragma omp parallel num_threads(nt)
    {
      std::vector<int64_t> hist(static_cast<size_t>(m + 1), 0);
#pragma omp for schedule(static)
      for (int64_t c0 = 0; c0 < cols; c0 += 65536)
        histogram(w + r * cols + c0, std::min<int64_t>(65536, cols - c0), bucket, hist.data());
#pragma omp critical
      for (int64_t u = 0; u <= m; ++u) total[u] += hist[u];
    }
    prefix_sum(total.data());
    write_row(r, total.data());
  }
}

template <class T>
void input_channel_typed(const T* w, int64_t out_channels, int64_t in_per_group, int64_t spatial,
                         int64_t groups, double t, double* out, int threads) {
  const auto tkey = threshold_key<T>(t);
  const int64_t in_channels = in_per_group * groups;
  const int64_t out_per_group = out_channels / groups;
  std::vector<int64_t> zeros(static_cast<size_t>(in_channels), 0);
  // Each thread reads whole filters (contiguous memory) into its own counts.
#pragma omp parallel num_threads(thread_count(threads))
  {
    std::vector<int64_t> local(static_cast<size_t>(in_channels), 0);
#pragma omp for schedule(static)
    for (int64_t o = 0; o < out_channels; ++o) {
      const int64_t first = (o / out_per_group) * in_per_group;
      for (int64_t ci = 0; ci < in_per_group; ++ci)
        local[first + ci] += count_le(w + (o * in_per_group + ci) * spatial, spatial, tkey);
    }
#pragma omp critical
    for (int64_t c = 0; c < in_channels; ++c) zeros[c] += local[c];
  }
  const double denom = static_cast<double>(out_per_group * spatial);
  for (int64_t c = 0; c < in_channels; ++c) out[c] = static_cast<double>(zeros[c]) / denom;
}

template <class T>
void add_counts_typed(const T* w, int64_t n, const double* t, int64_t k, int64_t* counts,
                      int threads) {
  using Key = typename KeyOf<T>::type;
  std::vector<Key> unique;
  std::vector<int64_t> index;
  unique_threshold_keys<Key>(t, k, unique, index);
  if (n == 0 || k == 0) return;
  const int64_t m = static_cast<int64_t>(unique.size());
  std::vector<int64_t> total(static_cast<size_t>(m + 1), 0);
  const int nt = thread_count(threads);
  constexpr int64_t kChunk = 1 << 16;
  if (static_cast<size_t>(m) <= kDirectMax) {
    for (int64_t u = 0; u < m; ++u) {
      int64_t zeros = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : zeros)
      for (int64_t c0 = 0; c0 < n; c0 += kChunk)
        zeros += count_le(w + c0, std::min(kChunk, n - c0), unique[u]);
      total[u] = zeros;
    }
  } else {
    const BucketIndex<Key> bucket(unique);
#pragma omp parallel num_threads(nt)
    {
      std::vector<int64_t> hist(static_cast<size_t>(m + 1), 0);
#pragma omp for schedule(static)
      for (int64_t c0 = 0; c0 < n; c0 += kChunk)
        histogram(w + c0, std::min(kChunk, n - c0), bucket, hist.data());
#pragma omp critical
      for (int64_t u = 0; u <= m; ++u) total[u] += hist[u];
    }
    for (int64_t u = 1; u < m; ++u) total[u] += total[u - 1];
  }
  for (int64_t i = 0; i < k; ++i) counts[i] += total[index[i]];
}

inline int64_t key64(float w) { return abs_key(static_cast<double>(w)); }
inline int64_t key64(double w) { return abs_key(w); }

// Calls f(key64) for every element of every span, split across threads; f gets the thread's slot.
template <class F>
void for_each_key(const std::vector<WeightSpan>& spans, int nt, F&& f) {
  constexpr int64_t kChunk = 1 << 16;
  for (const WeightSpan& s : spans) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t c0 = 0; c0 < s.size; c0 += kChunk) {
      int slot = 0;
#ifdef _OPENMP
      slot = omp_get_thread_num();
#endif
      const int64_t c1 = std::min(s.size, c0 + kChunk);
      if (s.dtype == DType::F32) {
        const float* p = static_cast<const float*>(s.data);
        for (int64_t i = c0; i < c1; ++i) f(slot, key64(p[i]));
      } else {
        const double* p = static_cast<const double*>(s.data);
        for (int64_t i = c0; i < c1; ++i) f(slot, key64(p[i]));
      }
    }
  }
}

}  // namespace

void zero_fraction_sweep(WeightSpan w, int64_t rows, int64_t cols, const double* t, int64_t k,
                         double* out, int threads) {
  check_thresholds(t, k);
  if (w.dtype == DType::F32)
    sweep_typed(static_cast<const float*>(w.data), rows, cols, t, k, out, threads);
  else
    sweep_typed(static_cast<const double*>(w.data), rows, cols, t, k, out, threads);
}

void input_channel_zero_fractions(WeightSpan w, int64_t out_channels, int64_t in_per_group,
                                  int64_t spatial, int64_t groups, double t, double* out,
                                  int threads) {
  check_thresholds(&t, 1);
  if (groups < 1) throw InputError("groups must be >= 1; got " + std::to_string(groups));
  if (out_channels % groups != 0)
    throw InputError("groups (" + std::to_string(groups) + ") must divide the " +
                     std::to_string(out_channels) + " output channels of the weight");
  if (w.dtype == DType::F32)
    input_channel_typed(static_cast<const float*>(w.data), out_channels, in_per_group, spatial,
                        groups, t, out, threads);
  else
    input_channel_typed(static_cast<const double*>(w.data), out_channels, in_per_group, spatial,
                        groups, t, out, threads);
}

void add_zero_counts(WeightSpan w, const double* t, int64_t k, int64_t* counts, int threads) {
  check_thresholds(t, k);
  if (w.dtype == DType::F32)
    add_counts_typed(static_cast<const float*>(w.data), w.size, t, k, counts, threads);
  else
    add_counts_typed(static_cast<const double*>(w.data), w.size, t, k, counts, threads);
}

int64_t kth_smallest_abs_key(const std::vector<WeightSpan>& spans, int64_t rank, int threads) {
  const int nt = thread_count(threads);
  constexpr int kDigitBits = 16;
  constexpr int64_t kGatherMax = int64_t{1} << 22;
  int64_t total = 0;
  for (const WeightSpan& s : spans) total += s.size;
  if (rank < 0 || rank >= total)
    throw InputError("rank " + std::to_string(rank) + " is outside the " + std::to_string(total) +
                     " weights");

  // Radix select: fix the key's bits from the top, 16 at a time, until the weights that share the
  // fixed prefix are few enough to select among directly.
  uint64_t prefix = 0;
  int fixed = 1;  // the sign bit of a key is always 0
  int64_t candidates = total;
  while (candidates > kGatherMax && fixed < 64) {
    const int bits = std::min(kDigitBits, 64 - fixed);
    const int shift = 64 - fixed - bits;
    const uint64_t high_shift = static_cast<uint64_t>(64 - fixed);
    std::vector<std::vector<int64_t>> hist(static_cast<size_t>(nt),
                                           std::vector<int64_t>(size_t{1} << bits, 0));
    for_each_key(spans, nt, [&](int slot, int64_t key) {
      const uint64_t u = static_cast<uint64_t>(key);
      if (high_shift == 64 || (u >> high_shift) == prefix)
        ++hist[slot][(u >> shift) & ((uint64_t{1} << bits) - 1)];
    });
    uint64_t digit = 0;
    for (;; ++digit) {
      int64_t in_bin = 0;
      for (int s = 0; s < nt; ++s) in_bin += hist[s][digit];
      if (rank < in_bin) {
        candidates = in_bin;
        break;
      }
      rank -= in_bin;
    }
    prefix = (prefix << bits) | digit;
    fixed += bits;
  }
  if (fixed == 64) return static_cast<int64_t>(prefix);

  const uint64_t high_shift = static_cast<uint64_t>(64 - fixed);
  std::vector<std::vector<int64_t>> found(static_cast<size_t>(nt));
  for_each_key(spans, nt, [&](int slot, int64_t key) {
    if ((static_cast<uint64_t>(key) >> high_shift) == prefix) found[slot].push_back(key);
  });
  std::vector<int64_t> keys;
  keys.reserve(static_cast<size_t>(candidates));
  for (auto& f : found) keys.insert(keys.end(), f.begin(), f.end());
  std::nth_element(keys.begin(), keys.begin() + rank, keys.end());
  return keys[static_cast<size_t>(rank)];
}

int64_t rank_for_sparsity(int64_t total, int64_t finite, double sparsity) {
  if (!(sparsity >= 0.0 && sparsity <= 1.0))
    throw InputError("sparsity must be in [0, 1]; got " + std::to_string(sparsity));
  if (total == 0) throw InputError("no weights: every array given is empty");
  if (sparsity == 0.0) return -1;
  const double n = static_cast<double>(total);
  // Smallest count whose fraction count / total reaches sparsity, as the curve computes it.
  int64_t count = std::min<int64_t>(total, static_cast<int64_t>(std::ceil(sparsity * n)));
  while (count > 1 && static_cast<double>(count - 1) / n >= sparsity) --count;
  while (count < total && static_cast<double>(count) / n < sparsity) ++count;
  if (count > finite)
    throw InputError("sparsity " + std::to_string(sparsity) + " cannot be reached: only " +
                     std::to_string(finite) + " of the " + std::to_string(total) +
                     " weights are finite (NaN and inf never count as zero)");
  return count - 1;
}

}  // namespace onnxprune
