// CPU kernels for zero-fraction statistics (OpenMP across rows or chunks).
//
// A sweep over K thresholds reads each weight once: the weight's bits are mapped to j, the number
// of distinct threshold keys below it, through a bucket table (KeyIndex: one load and one add in
// the usual case), and j is counted in a per-row histogram; the prefix sums of the histogram give
// the zero counts at every threshold.
#include "zero_stats.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

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

// A per-thread buffer of n elements (zeroed when Zero) that keeps its memory across calls.
// Kernels run often on many layers; fresh buffers in OpenMP workers would be returned to the OS
// and page-faulted again on every call. Valid until the same thread asks for the same (T, Tag).
template <class T, int Tag, bool Zero = true>
T* thread_scratch(size_t n) {
  thread_local std::vector<T> buffer;
  if (Zero) buffer.assign(n, T{});
  else if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

// fraction[c] = c / n for c in [0, n]: a load instead of a division per result, with the same
// (correctly rounded) value. Kept per thread for the last n, as layers often share it.
const double* fraction_table(int64_t n) {
  thread_local std::vector<double> table;
  if (static_cast<int64_t>(table.size()) != n + 1) {
    table.resize(static_cast<size_t>(n + 1));
    for (int64_t c = 0; c <= n; ++c) table[c] = static_cast<double>(c) / static_cast<double>(n);
  }
  return table.data();
}

// Maps a weight's key to j = #{distinct threshold keys < key}, in [0, M], for the histogram.
//
// Packed mode (thresholds at least 2^s key units apart, the usual case): the weight's top bits
// pick a bucket b of a table over the whole key range (twice: both signs, which saves masking the
// sign bit). A bucket holds at most one threshold key, at offset o; its entry is (j at the
// bucket's start) << s plus (2^s - 1 - o), so adding the weight's low s bits carries into j
// exactly when its key lies above the threshold. The entry also subtracts b << s (modulo 2^bits),
// so the weight's whole bit pattern can be added instead of its low bits: one load, one add.
// General mode (denser thresholds): a table over the thresholds' range gives the bucket's first j
// and up to W compares (or a binary search) finish it.
template <class Key>
class KeyIndex {
 public:
  using UKey = std::make_unsigned_t<Key>;
  static constexpr int kKeyBits = 8 * sizeof(Key) - 1;  // the sign bit of a key is always 0
  static constexpr int kTableBits = 17;                  // at most 2^17 table entries

  explicit KeyIndex(const std::vector<Key>& unique) : keys_(unique) {
    const int64_t m = static_cast<int64_t>(unique.size());
    UKey min_gap = std::numeric_limits<UKey>::max();
    for (int64_t i = 1; i < m; ++i)
      min_gap = std::min<UKey>(min_gap, static_cast<UKey>(unique[i] - unique[i - 1]));
    int gap_bits = 0;  // largest s with 2^s <= min_gap
    while (gap_bits < kKeyBits && (UKey{2} << gap_bits) <= min_gap) ++gap_bits;
    shift_ = std::min(gap_bits, kKeyBits - 1);
    // (m + 2) << shift must fit in a UKey for the carry to land in j.
    const int j_bits = 8 * static_cast<int>(sizeof(UKey)) - shift_;
    packed_ = shift_ >= kKeyBits + 1 - kTableBits && m + 2 < (int64_t{1} << std::min(j_bits, 62));
    if (packed_) build_packed(m);
    else build_general(m);
  }

  bool packed() const { return packed_; }
  int64_t width() const { return width_; }

  // The packed table as plain values, so the hot loop keeps them in registers.
  struct Packed {
    const UKey* table;
    int shift;
    template <class T>
    inline uint32_t operator()(T w) const {
      static_assert(sizeof(T) == sizeof(UKey), "weight and key sizes differ");
      UKey bits;
      memcpy(&bits, &w, sizeof bits);
      return of_bits(bits);
    }
    inline uint32_t of_bits(UKey bits) const {
      return static_cast<uint32_t>((table[bits >> shift] + bits) >> shift);
    }
  };
  Packed packed_lookup() const { return Packed{packed_table_, shift_}; }

  template <int W>
  inline uint32_t general_index(Key key) const {
    int64_t b = ((static_cast<int64_t>(key) - static_cast<int64_t>(base_)) >> shift_) + 1;
    b = b < 0 ? 0 : b;
    b = b > buckets_ + 1 ? buckets_ + 1 : b;
    const uint32_t lo = lo_[static_cast<size_t>(b)];
    uint32_t j = lo;
    for (int i = 0; i < W; ++i) j += keys_[lo + i] < key;
    return j;
  }

  inline uint32_t search_index(Key key) const {
    return static_cast<uint32_t>(std::lower_bound(keys_.begin(), keys_.begin() + m_, key) - keys_.begin());
  }

 private:
  // Buckets between two thresholds all hold j << s; the bucket of threshold j (never shared, as
  // thresholds are at least 2^s apart) holds j << s plus low - offset; then every bucket b less
  // b << s. Built with range fills.
  void build_packed(int64_t m) {
    m_ = m;
    const UKey low = (UKey{1} << shift_) - 1;
    const size_t half = size_t{1} << (kKeyBits - shift_);
    // The table (up to 2^17 entries) lives in a per-thread buffer that keeps its capacity across
    // calls: a fresh allocation of that size would be mmap'ed and page-faulted on every call.
    // One KeyIndex per thread at a time (each kernel call builds one, before its parallel region).
    // The table depends only on the threshold keys: a sweep of many layers at the same
    // thresholds builds it once.
    thread_local std::vector<UKey> storage;
    thread_local std::vector<Key> storage_keys;
    if (storage.size() == 2 * half && storage_keys == keys_) {
      packed_table_ = storage.data();
      return;
    }
    storage_keys.clear();  // invalid while the table is rebuilt
    storage.resize(2 * half);
    UKey* table = storage.data();
    packed_table_ = table;
    size_t next = 0;  // first bucket not yet filled
    for (int64_t j = 0; j < m; ++j) {
      const UKey key = static_cast<UKey>(keys_[j]);
      const size_t b = static_cast<size_t>(key >> shift_);
      const UKey entry = static_cast<UKey>(j) << shift_;
      std::fill(table + next, table + b, entry);
      table[b] = entry + (low - (key & low));  // a threshold at the bucket's last key adds 0
      next = b + 1;
    }
    std::fill(table + next, table + half, static_cast<UKey>(m) << shift_);
    std::copy(table, table + half, table + half);
    for (size_t b = 0; b < 2 * half; ++b) table[b] -= static_cast<UKey>(b) << shift_;
    storage_keys = keys_;
  }

  // Bucket 0 holds keys below the first threshold, bucket b in [1, buckets] the keys
  // base + [(b-1), b) << shift, bucket buckets + 1 everything above.
  void build_general(int64_t m) {
    m_ = m;
    base_ = keys_.front();
    const uint64_t range = static_cast<uint64_t>(keys_.back()) - static_cast<uint64_t>(base_);
    int shift = 0;
    while ((range >> shift) + 1 > (uint64_t{1} << kTableBits)) ++shift;
    shift_ = std::max(shift, shift_);
    buckets_ = static_cast<int64_t>(range >> shift_) + 1;
    lo_.resize(static_cast<size_t>(buckets_ + 2));
    lo_[0] = 0;
    lo_[static_cast<size_t>(buckets_ + 1)] = static_cast<uint32_t>(m);
    width_ = 0;
    const auto below = [&](uint64_t key) {
      return std::lower_bound(keys_.begin(), keys_.end(), key,
                              [](Key u, uint64_t v) { return static_cast<uint64_t>(u) < v; }) -
             keys_.begin();
    };
    for (int64_t b = 1; b <= buckets_; ++b) {
      const uint64_t first = static_cast<uint64_t>(base_) + (static_cast<uint64_t>(b - 1) << shift_);
      const int64_t lo = below(first), hi = below(first + ((uint64_t{1} << shift_) - 1));
      lo_[static_cast<size_t>(b)] = static_cast<uint32_t>(lo);
      width_ = std::max(width_, hi - lo);
    }
    keys_.resize(static_cast<size_t>(m + width_ + 1), std::numeric_limits<Key>::max());
  }

  std::vector<Key> keys_;
  int64_t m_ = 0;
  int shift_ = 0;
  bool packed_ = false;
  const UKey* packed_table_ = nullptr;
  Key base_ = 0;
  int64_t buckets_ = 0;
  int64_t width_ = 0;
  std::vector<uint32_t> lo_;
};

// Four interleaved histograms of M + 1 uint32 bins. Consecutive weights land in different copies,
// so a run of weights in one bin does not serialise on a single counter. Callers add at most
// 2^32 - 1 weights between drains.
template <class Key>
class Histogram {
 public:
  explicit Histogram(const KeyIndex<Key>& index, int64_t m)
      : index_(index), m_(m), stride_((m + 16) & ~int64_t{15}),
        bins_(thread_scratch<uint32_t, 0>(static_cast<size_t>(4 * stride_))) {}

  template <class T>
  void add(const T* p, int64_t n) {
    if (index_.packed()) return count(p, n, index_.packed_lookup());
    switch (index_.width()) {
      case 0:
      case 1: return count(p, n, [this](T w) { return index_.template general_index<1>(abs_key(w)); });
      case 2: return count(p, n, [this](T w) { return index_.template general_index<2>(abs_key(w)); });
      case 3:
      case 4: return count(p, n, [this](T w) { return index_.template general_index<4>(abs_key(w)); });
      default: return count(p, n, [this](T w) { return index_.search_index(abs_key(w)); });
    }
  }

  // zeros[u] += number of weights added since the last drain whose key is <= threshold key u,
  // for u < M; empties the histogram for the next batch.
  void drain_into(int64_t* zeros) {
    drain([zeros](int64_t u, int64_t count) { zeros[u] += count; });
  }

  // counts[u] = the number of weights added since the last emptying that fell in bin u, for
  // u < M (not cumulative); empties the histogram.
  void take_counts(uint32_t* __restrict counts) {
    uint32_t* __restrict h0 = bins_;
    uint32_t* __restrict h1 = h0 + stride_;
    uint32_t* __restrict h2 = h1 + stride_;
    uint32_t* __restrict h3 = h2 + stride_;
    for (int64_t u = 0; u <= m_; ++u) {  // vectorised; < 2^32 as at most 2^32 - 1 weights were added
      counts[u] = h0[u] + h1[u] + h2[u] + h3[u];
      h0[u] = h1[u] = h2[u] = h3[u] = 0;
    }
  }

  // Bins per row in take_counts' output (M + 1 rounded up to 16).
  int64_t stride() const { return stride_; }

 private:
  // Calls put(u, cumulative count up to bin u) for u < M and empties the bins.
  template <class Put>
  void drain(const Put put) {
    uint32_t* __restrict h0 = bins_;
    uint32_t* __restrict h1 = h0 + stride_;
    uint32_t* __restrict h2 = h1 + stride_;
    uint32_t* __restrict h3 = h2 + stride_;
    for (int64_t u = 0; u <= m_; ++u) {  // the copies' sum into copy 0: a vectorised pass
      h0[u] += h1[u] + h2[u] + h3[u];     // < 2^32: at most 2^32 - 1 weights per drain
      h1[u] = h2[u] = h3[u] = 0;
    }
    int64_t sum = 0;
    for (int64_t u = 0; u < m_; ++u) {
      sum += h0[u];
      h0[u] = 0;
      put(u, sum);
    }
    h0[m_] = 0;
  }

  template <class T, class J>
  void count(const T* __restrict p, int64_t n, const J j_of) {
    uint32_t* __restrict h0 = bins_;
    uint32_t* __restrict h1 = h0 + stride_;
    uint32_t* __restrict h2 = h1 + stride_;
    uint32_t* __restrict h3 = h2 + stride_;
    int64_t i = 0;
    if constexpr (sizeof(T) == 4 && std::is_same_v<J, typename KeyIndex<Key>::Packed>) {
      // float32: two weights per 64-bit load. The loop is bound by memory operations (a weight,
      // a table entry, a counter's load and store); this saves half the weight loads.
      for (; i + 8 <= n; i += 8) {
        uint64_t a, b, c, d;
        memcpy(&a, p + i, 8);
        memcpy(&b, p + i + 2, 8);
        memcpy(&c, p + i + 4, 8);
        memcpy(&d, p + i + 6, 8);
        ++h0[j_of.of_bits(static_cast<uint32_t>(a))];
        ++h1[j_of.of_bits(static_cast<uint32_t>(a >> 32))];
        ++h2[j_of.of_bits(static_cast<uint32_t>(b))];
        ++h3[j_of.of_bits(static_cast<uint32_t>(b >> 32))];
        ++h0[j_of.of_bits(static_cast<uint32_t>(c))];
        ++h1[j_of.of_bits(static_cast<uint32_t>(c >> 32))];
        ++h2[j_of.of_bits(static_cast<uint32_t>(d))];
        ++h3[j_of.of_bits(static_cast<uint32_t>(d >> 32))];
      }
    }
    for (; i + 4 <= n; i += 4) {
      ++h0[j_of(p[i])];
      ++h1[j_of(p[i + 1])];
      ++h2[j_of(p[i + 2])];
      ++h3[j_of(p[i + 3])];
    }
    for (; i < n; ++i) ++h0[j_of(p[i])];
  }

  const KeyIndex<Key>& index_;
  int64_t m_;
  int64_t stride_;
  uint32_t* bins_;
};

// Number of elements of p[0..n) whose key is <= tkey: a compare-and-add loop the compiler
// vectorises.
template <class T>
int64_t count_le(const T* p, int64_t n, typename KeyOf<T>::type tkey) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += abs_key(p[i]) <= tkey;
  return count;
}

// For a block of bn <= 8 rows with bin counts counts[r * stride + u]: values[u * ld + r] =
// value(the row's cumulative count up to bin u), for u < m. The rows' running sums are
// independent, so a full block keeps eight of them in flight instead of one serial chain.
template <class V>
inline void cumulate_rows(const uint32_t* __restrict counts, int64_t stride, int64_t bn, int64_t m,
                          double* __restrict values, int64_t ld, const V value) {
  int64_t sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t u = 0; u < m; ++u) {
    for (int64_t r = 0; r < bn; ++r) {
      sum[r] += counts[r * stride + u];
      values[u * ld + r] = value(sum[r]);
    }
  }
}

template <class V>
void cumulate_block(const uint32_t* counts, int64_t stride, int64_t bn, int64_t m, double* values,
                    int64_t ld, const V value) {
  if (bn == 8) cumulate_rows(counts, stride, 8, m, values, ld, value);  // unrolled, sums in registers
  else cumulate_rows(counts, stride, bn, m, values, ld, value);
}

// Few distinct thresholds: counting directly is cheaper than a histogram.
constexpr size_t kDirectMax = 4;
// Weights per histogram chunk when a thread's share is split (keeps uint32 bins from overflowing).
constexpr int64_t kChunk = int64_t{1} << 16;

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

  if (static_cast<size_t>(m) <= kDirectMax) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      int64_t zeros[kDirectMax];
      for (int64_t u = 0; u < m; ++u) zeros[u] = count_le(w + r * cols, cols, unique[u]);
      for (int64_t i = 0; i < k; ++i) out[i * rows + r] = static_cast<double>(zeros[index[i]]) / denom;
    }
    return;
  }

  const KeyIndex<Key> key_index(unique);
  if (rows >= 2 * nt && cols < (int64_t{1} << 32)) {
    // A table of count / cols when there are more results than possible counts.
    const double* table = cols < rows * k ? fraction_table(cols) : nullptr;
    // Tiles of up to 64 rows: each threshold's results for a tile are written as one contiguous
    // run of the (K, F) output instead of one cache line per page. A multiple of the thread count
    // of equal tiles, so that every thread gets the same number of rows (give or take one).
    constexpr int64_t kMaxTile = 64;
    const int64_t tiles_wanted = nt * ((rows + nt * kMaxTile - 1) / (nt * kMaxTile));
    const int64_t tile_rows = (rows + tiles_wanted - 1) / tiles_wanted;
    const int64_t tiles = (rows + tile_rows - 1) / tile_rows;
#pragma omp parallel num_threads(nt)
    {
      Histogram<Key> hist(key_index, m);
      // values[u * tile_rows + r]: the result at distinct threshold u for row r0 + r, filled from
      // the bin counts of blocks of 8 rows (counts[r * stride + u]).
      double* values = thread_scratch<double, 0, false>(static_cast<size_t>(tile_rows * m));
      uint32_t* counts = thread_scratch<uint32_t, 1, false>(static_cast<size_t>(8 * hist.stride()));
#pragma omp for schedule(static)
      for (int64_t tile = 0; tile < tiles; ++tile) {
        const int64_t r0 = tile * tile_rows, n = std::min(rows, r0 + tile_rows) - r0;
        for (int64_t b = 0; b < n; b += 8) {
          const int64_t bn = std::min<int64_t>(8, n - b);
          for (int64_t r = 0; r < bn; ++r) {
            hist.add(w + (r0 + b + r) * cols, cols);
            hist.take_counts(counts + r * hist.stride());
          }
          if (table == nullptr)
            cumulate_block(counts, hist.stride(), bn, m, values + b, tile_rows,
                           [denom](int64_t zeros) { return static_cast<double>(zeros) / denom; });
          else
            cumulate_block(counts, hist.stride(), bn, m, values + b, tile_rows,
                           [table](int64_t zeros) { return table[zeros]; });
        }
        for (int64_t i = 0; i < k; ++i) {
          const double* v = values + index[i] * tile_rows;
          std::copy(v, v + n, out + i * rows + r0);
        }
      }
    }
    return;
  }
  // Few long rows: split each row across threads.
  std::vector<int64_t> zeros(static_cast<size_t>(m));
  for (int64_t r = 0; r < rows; ++r) {
    std::fill(zeros.begin(), zeros.end(), 0);
#pragma omp parallel num_threads(nt)
    {
      Histogram<Key> hist(key_index, m);
      std::vector<int64_t> local(static_cast<size_t>(m), 0);
#pragma omp for schedule(static)
      for (int64_t c0 = 0; c0 < cols; c0 += kChunk) {
        hist.add(w + r * cols + c0, std::min(kChunk, cols - c0));
        hist.drain_into(local.data());
      }
#pragma omp critical
      for (int64_t u = 0; u < m; ++u) zeros[u] += local[u];
    }
    for (int64_t i = 0; i < k; ++i) out[i * rows + r] = static_cast<double>(zeros[index[i]]) / denom;
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
  std::vector<int64_t> zeros(static_cast<size_t>(m), 0);
  const int nt = thread_count(threads);
  if (static_cast<size_t>(m) <= kDirectMax) {
    for (int64_t u = 0; u < m; ++u) {
      int64_t z = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : z)
      for (int64_t c0 = 0; c0 < n; c0 += kChunk) z += count_le(w + c0, std::min(kChunk, n - c0), unique[u]);
      zeros[u] = z;
    }
  } else {
    const KeyIndex<Key> key_index(unique);
#pragma omp parallel num_threads(nt)
    {
      Histogram<Key> hist(key_index, m);
      std::vector<int64_t> local(static_cast<size_t>(m), 0);
#pragma omp for schedule(static)
      for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
        hist.add(w + c0, std::min(kChunk, n - c0));
        hist.drain_into(local.data());
      }
#pragma omp critical
      for (int64_t u = 0; u < m; ++u) zeros[u] += local[u];
    }
  }
  for (int64_t i = 0; i < k; ++i) counts[i] += zeros[index[i]];
}

// Radix-select keys: a float32's bits without the sign when every array is float32 (32-bit
// keys), else the float64 key of the value (float32 widened exactly).
template <class UKey>
inline UKey select_key(float w) {
  if constexpr (sizeof(UKey) == 4) return static_cast<UKey>(abs_key(w));
  else return static_cast<UKey>(abs_key(static_cast<double>(w)));
}
template <class UKey>
inline UKey select_key(double w) { return static_cast<UKey>(abs_key(w)); }

// One radix-select digit: which bits of the key are already fixed, and which are counted.
template <class UKey>
struct Digit {
  int high_shift;  // key >> high_shift must equal `fixed`
  UKey fixed;
  int shift;  // the digit is (key >> shift) & mask
  UKey mask;
};

// hist[d] += number of elements of p[0..n) whose key has the fixed bits and digit d; four
// interleaved copies (stride apart), as most keys share a few digits.
template <class UKey, class T>
void count_digits(const T* __restrict p, int64_t n, const Digit<UKey> d, int64_t* __restrict hist,
                  int64_t stride) {
  int64_t* __restrict h[4] = {hist, hist + stride, hist + 2 * stride, hist + 3 * stride};
  for (int64_t i = 0; i < n; ++i) {
    const UKey key = select_key<UKey>(p[i]);
    if ((key >> d.high_shift) == d.fixed) ++h[i & 3][(key >> d.shift) & d.mask];
  }
}

// Appends to `out` the keys of p[0..n) that have the fixed bits.
template <class UKey, class T>
void gather_keys(const T* __restrict p, int64_t n, const Digit<UKey> d, std::vector<UKey>& out) {
  for (int64_t i = 0; i < n; ++i) {
    const UKey key = select_key<UKey>(p[i]);
    if ((key >> d.high_shift) == d.fixed) out.push_back(key);
  }
}

// Calls f(slot, p, n) on chunks of every span, split across threads (slot = thread number).
template <class UKey, class F>
void for_each_chunk(const std::vector<WeightSpan>& spans, int nt, const F f) {
  for (const WeightSpan& s : spans) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t c0 = 0; c0 < s.size; c0 += kChunk) {
      int slot = 0;
#ifdef _OPENMP
      slot = omp_get_thread_num();
#endif
      const int64_t n = std::min(kChunk, s.size - c0);
      if (s.dtype == DType::F32) f(slot, static_cast<const float*>(s.data) + c0, n);
      else if constexpr (sizeof(UKey) == 8) f(slot, static_cast<const double*>(s.data) + c0, n);
    }
  }
}

// The rank-th smallest key (0-based) over all spans. Radix select: fix the key's bits from the
// top, 11 at a time, until the weights sharing the fixed prefix are few enough to select among
// directly.
template <class UKey>
UKey radix_select(const std::vector<WeightSpan>& spans, int64_t rank, int64_t total, int nt) {
  constexpr int kKeyBits = 8 * sizeof(UKey);
  constexpr int kDigitBits = 11;
  constexpr int64_t kBins = int64_t{1} << kDigitBits;
  constexpr int64_t kGatherMax = int64_t{1} << 22;
  UKey prefix = 0;
  int fixed = 1;  // the sign bit of a key is always 0
  int64_t candidates = total;
  while (candidates > kGatherMax && fixed < kKeyBits) {
    const int bits = std::min(kDigitBits, kKeyBits - fixed);
    const Digit<UKey> d{kKeyBits - fixed, prefix, kKeyBits - fixed - bits,
                        static_cast<UKey>((UKey{1} << bits) - 1)};
    std::vector<int64_t> counts(static_cast<size_t>(nt * 4 * kBins), 0);  // 4 copies per thread
    int64_t* const hist = counts.data();
    for_each_chunk<UKey>(spans, nt, [hist, d](int slot, const auto* p, int64_t n) {
      count_digits<UKey>(p, n, d, hist + slot * 4 * kBins, kBins);
    });
    UKey digit = 0;
    for (;; ++digit) {
      int64_t in_bin = 0;
      for (int64_t copy = 0; copy < nt * 4; ++copy) in_bin += hist[copy * kBins + digit];
      if (rank < in_bin) {
        candidates = in_bin;
        break;
      }
      rank -= in_bin;
    }
    prefix = static_cast<UKey>((prefix << bits) | digit);
    fixed += bits;
  }
  if (fixed == kKeyBits) return prefix;

  const Digit<UKey> d{kKeyBits - fixed, prefix, 0, 0};
  std::vector<std::vector<UKey>> found(static_cast<size_t>(nt));
  std::vector<UKey>* const found_by_slot = found.data();
  for_each_chunk<UKey>(spans, nt, [found_by_slot, d](int slot, const auto* p, int64_t n) {
    gather_keys<UKey>(p, n, d, found_by_slot[slot]);
  });
  std::vector<UKey> keys;
  keys.reserve(static_cast<size_t>(candidates));
  for (auto& f : found) keys.insert(keys.end(), f.begin(), f.end());
  std::nth_element(keys.begin(), keys.begin() + rank, keys.end());
  return keys[static_cast<size_t>(rank)];
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
  int64_t total = 0;
  bool all_f32 = true;
  for (const WeightSpan& s : spans) {
    total += s.size;
    all_f32 = all_f32 && s.dtype == DType::F32;
  }
  if (rank < 0 || rank >= total)
    throw InputError("rank " + std::to_string(rank) + " is outside the " + std::to_string(total) +
                     " weights");
  if (!all_f32) return static_cast<int64_t>(radix_select<uint64_t>(spans, rank, total, nt));
  const uint32_t key = radix_select<uint32_t>(spans, rank, total, nt);
  float value;
  memcpy(&value, &key, sizeof value);
  return abs_key(static_cast<double>(value));
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
