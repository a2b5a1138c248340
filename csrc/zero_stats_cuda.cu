// CUDA kernels for zero-fraction statistics: the same keys and results as zero_stats.cpp.
//
// Thresholds are deduplicated and turned into keys on the host, then handled in chunks of at most
// kChunk keys: each element finds j, the number of the chunk's keys below its own key, by binary
// search in shared memory and counts it in a shared histogram; prefix sums give the zero counts.
#include "zero_stats_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <limits>
#include <stdexcept>
#include <string>

namespace onnxprune::cuda {
namespace {

constexpr int kChunk = 2048;
constexpr int kThreads = 256;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

// The device that owns `ptr`; throws when it is not device (or managed) memory.
int device_of(const void* ptr) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess ||
      (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)) {
    cudaGetLastError();
    throw InputError("the array's __cuda_array_interface__ pointer is not CUDA device memory");
  }
  return attr.device;
}

// Makes the device that owns `ptr` current for the guard's lifetime.
class DeviceGuard {
 public:
  explicit DeviceGuard(const void* ptr) {
    const int device = device_of(ptr);
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

// Scratch memory from the stream-ordered pool: no device-wide synchronisation per call, as
// cudaMalloc/cudaFree would cost (about 100 us for each of a model's layers).
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer(size_t n, cudaStream_t stream) : stream_(stream) {
    if (n > 0) check(cudaMallocAsync(reinterpret_cast<void**>(&ptr_), n * sizeof(T), stream_), "cudaMallocAsync");
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFreeAsync(ptr_, stream_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  cudaStream_t stream_;
};

// Number of keys[0..m) that are < key (keys sorted).
template <class Key>
__device__ __forceinline__ int below(const Key* keys, int m, Key key) {
  int lo = 0, hi = m;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (keys[mid] < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// One block per row: frac[u * rows + r] = fraction of row r's elements whose key <= keys[u], u < m.
// The block counts its row into a shared histogram, then scans it: thread i owns a run of bins.
template <class T, class Key>
__global__ void sweep_rows(const T* w, int64_t rows, int64_t cols, const Key* keys, int m, double* frac) {
  __shared__ Key skeys[kChunk];
  __shared__ unsigned int hist[kChunk + 1];
  __shared__ unsigned long long warp_total[kThreads / 32];
  for (int i = threadIdx.x; i < m; i += blockDim.x) skeys[i] = keys[i];
  const int per = (m + blockDim.x - 1) / blockDim.x;
  const int lo = min(m, static_cast<int>(threadIdx.x) * per), hi = min(m, lo + per);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const double denom = static_cast<double>(cols);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int i = threadIdx.x; i <= m; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    const T* row = w + r * cols;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x)
      atomicAdd(&hist[below(skeys, m, abs_key(row[i]))], 1u);
    __syncthreads();
    unsigned long long own = 0;
    for (int u = lo; u < hi; ++u) own += hist[u];
    unsigned long long inclusive = own;  // inclusive scan of `own` within the warp
    for (int d = 1; d < 32; d <<= 1) {
      const unsigned long long v = __shfl_up_sync(0xffffffffu, inclusive, d);
      if (lane >= d) inclusive += v;
    }
    if (lane == 31) warp_total[warp] = inclusive;
    __syncthreads();
    unsigned long long run = inclusive - own;
    for (int v = 0; v < warp; ++v) run += warp_total[v];
    for (int u = lo; u < hi; ++u) {
      run += hist[u];
      frac[u * rows + r] = static_cast<double>(run) / denom;
    }
    __syncthreads();
  }
}

// hist[j] += number of elements with j of the keys below their key (grid-stride).
template <class T, class Key>
__global__ void histogram_flat(const T* w, int64_t n, const Key* keys, int m,
                               unsigned long long* hist) {
  __shared__ Key skeys[kChunk];
  __shared__ unsigned int local[kChunk + 1];
  for (int i = threadIdx.x; i < m; i += blockDim.x) skeys[i] = keys[i];
  for (int i = threadIdx.x; i <= m; i += blockDim.x) local[i] = 0;
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    atomicAdd(&local[below(skeys, m, abs_key(w[i]))], 1u);
  __syncthreads();
  for (int i = threadIdx.x; i <= m; i += blockDim.x)
    if (local[i]) atomicAdd(&hist[i], static_cast<unsigned long long>(local[i]));
}

template <class T, class Key>
__global__ void input_channel_counts(const T* w, int64_t n, int64_t in_per_group, int64_t spatial,
                                     int64_t out_per_group, Key tkey, unsigned long long* zeros) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n;
       e += int64_t{gridDim.x} * blockDim.x) {
    if (abs_key(w[e]) > tkey) continue;
    const int64_t filter_row = e / spatial;  // o * in_per_group + ci
    const int64_t o = filter_row / in_per_group, ci = filter_row % in_per_group;
    atomicAdd(&zeros[(o / out_per_group) * in_per_group + ci], 1ull);
  }
}

__device__ __forceinline__ int64_t key64(float w) { return abs_key(static_cast<double>(w)); }
__device__ __forceinline__ int64_t key64(double w) { return abs_key(w); }

// Histogram of the `bits`-wide digit at `shift` of the float64 keys whose bits above
// `shift + bits` equal `prefix`.
template <class T>
__global__ void digit_histogram(const T* w, int64_t n, unsigned long long prefix, int high_shift,
                                int shift, int bits, unsigned long long* hist) {
  __shared__ unsigned int local[2048];
  const int nbins = 1 << bits;
  for (int i = threadIdx.x; i < nbins; i += blockDim.x) local[i] = 0;
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const unsigned long long u = static_cast<unsigned long long>(key64(w[i]));
    if ((u >> high_shift) == prefix) atomicAdd(&local[(u >> shift) & (nbins - 1)], 1u);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < nbins; i += blockDim.x)
    if (local[i]) atomicAdd(&hist[i], static_cast<unsigned long long>(local[i]));
}

int grid_for(int64_t work) {
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(1, (work + kThreads - 1) / kThreads), 4096));
}

template <class T>
void sweep_typed(const T* w, int64_t rows, int64_t cols, const double* t, int64_t k, double* out,
                 cudaStream_t stream) {
  using Key = typename KeyOf<T>::type;
  std::vector<Key> unique;
  std::vector<int64_t> index;
  unique_threshold_keys<Key>(t, k, unique, index);
  if (rows == 0 || k == 0) return;
  const int64_t m = static_cast<int64_t>(unique.size());
  DeviceBuffer<Key> keys(static_cast<size_t>(m), stream);
  check(cudaMemcpyAsync(keys.get(), unique.data(), m * sizeof(Key), cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync");
  DeviceBuffer<double> frac(static_cast<size_t>(m * rows), stream);
  const int grid = static_cast<int>(std::min<int64_t>(rows, 65535));
  for (int64_t a = 0; a < m; a += kChunk) {
    const int c = static_cast<int>(std::min<int64_t>(kChunk, m - a));
    sweep_rows<<<grid, kThreads, 0, stream>>>(w, rows, cols, keys.get() + a, c, frac.get() + a * rows);
    check(cudaGetLastError(), "sweep_rows launch");
  }
  // Distinct thresholds (the usual case) give the result's layout: one copy into `out`.
  std::vector<double> unique_frac(m == k ? 0 : static_cast<size_t>(m * rows));
  double* host = m == k ? out : unique_frac.data();
  check(cudaMemcpyAsync(host, frac.get(), m * rows * sizeof(double), cudaMemcpyDeviceToHost, stream),
        "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream), "sweep_rows");
  if (m != k)
    for (int64_t i = 0; i < k; ++i)
      std::copy_n(unique_frac.data() + index[i] * rows, rows, out + i * rows);
}

template <class T>
void add_counts_typed(const T* w, int64_t n, const double* t, int64_t k, int64_t* counts,
                      cudaStream_t stream) {
  using Key = typename KeyOf<T>::type;
  std::vector<Key> unique;
  std::vector<int64_t> index;
  unique_threshold_keys<Key>(t, k, unique, index);
  if (n == 0 || k == 0) return;
  const int64_t m = static_cast<int64_t>(unique.size());
  DeviceBuffer<Key> keys(static_cast<size_t>(m), stream);
  check(cudaMemcpyAsync(keys.get(), unique.data(), m * sizeof(Key), cudaMemcpyHostToDevice, stream),
        "cudaMemcpyAsync");
  DeviceBuffer<unsigned long long> dhist(kChunk + 1, stream);
  std::vector<unsigned long long> hist(kChunk + 1);
  std::vector<int64_t> zeros(static_cast<size_t>(m));
  for (int64_t a = 0; a < m; a += kChunk) {
    const int c = static_cast<int>(std::min<int64_t>(kChunk, m - a));
    check(cudaMemsetAsync(dhist.get(), 0, (c + 1) * sizeof(unsigned long long), stream), "cudaMemset");
    histogram_flat<<<grid_for(n), kThreads, 0, stream>>>(w, n, keys.get() + a, c, dhist.get());
    check(cudaGetLastError(), "histogram_flat launch");
    check(cudaMemcpyAsync(hist.data(), dhist.get(), (c + 1) * sizeof(unsigned long long),
                          cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream), "histogram_flat");
    int64_t sum = 0;
    for (int u = 0; u < c; ++u) zeros[a + u] = (sum += static_cast<int64_t>(hist[u]));
  }
  for (int64_t i = 0; i < k; ++i) counts[i] += zeros[index[i]];
}

}  // namespace

bool available() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return n > 0;
}

void zero_fraction_sweep(WeightSpan w, int64_t rows, int64_t cols, const double* t, int64_t k,
                         double* out, uintptr_t stream) {
  check_thresholds(t, k);
  if (rows == 0 || cols == 0 || k == 0) {
    for (int64_t i = 0; i < rows * k; ++i) out[i] = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  DeviceGuard guard(w.data);
  if (w.dtype == DType::F32)
    sweep_typed(static_cast<const float*>(w.data), rows, cols, t, k, out, as_stream(stream));
  else
    sweep_typed(static_cast<const double*>(w.data), rows, cols, t, k, out, as_stream(stream));
}

void input_channel_zero_fractions(WeightSpan w, int64_t out_channels, int64_t in_per_group,
                                  int64_t spatial, int64_t groups, double t, double* out,
                                  uintptr_t stream) {
  check_thresholds(&t, 1);
  if (groups < 1) throw InputError("groups must be >= 1; got " + std::to_string(groups));
  if (out_channels % groups != 0)
    throw InputError("groups (" + std::to_string(groups) + ") must divide the " +
                     std::to_string(out_channels) + " output channels of the weight");
  const int64_t in_channels = in_per_group * groups;
  const int64_t out_per_group = out_channels / groups;
  std::vector<unsigned long long> zeros(static_cast<size_t>(in_channels), 0);
  if (w.size > 0) {
    DeviceGuard guard(w.data);
    const cudaStream_t s = as_stream(stream);
    DeviceBuffer<unsigned long long> dzeros(static_cast<size_t>(in_channels), s);
    check(cudaMemsetAsync(dzeros.get(), 0, in_channels * sizeof(unsigned long long), s), "cudaMemset");
    if (w.dtype == DType::F32)
      input_channel_counts<<<grid_for(w.size), kThreads, 0, s>>>(
          static_cast<const float*>(w.data), w.size, in_per_group, spatial, out_per_group,
          threshold_key_f32(t), dzeros.get());
    else
      input_channel_counts<<<grid_for(w.size), kThreads, 0, s>>>(
          static_cast<const double*>(w.data), w.size, in_per_group, spatial, out_per_group,
          threshold_key_f64(t), dzeros.get());
    check(cudaGetLastError(), "input_channel_counts launch");
    check(cudaMemcpyAsync(zeros.data(), dzeros.get(), in_channels * sizeof(unsigned long long),
                          cudaMemcpyDeviceToHost, s),
          "cudaMemcpyAsync");
    check(cudaStreamSynchronize(s), "input_channel_counts");
  }
  const double denom = static_cast<double>(out_per_group * spatial);
  for (int64_t c = 0; c < in_channels; ++c) out[c] = static_cast<double>(zeros[c]) / denom;
}

void add_zero_counts(WeightSpan w, const double* t, int64_t k, int64_t* counts, uintptr_t stream) {
  check_thresholds(t, k);
  if (w.size == 0) return;
  DeviceGuard guard(w.data);
  if (w.dtype == DType::F32)
    add_counts_typed(static_cast<const float*>(w.data), w.size, t, k, counts, as_stream(stream));
  else
    add_counts_typed(static_cast<const double*>(w.data), w.size, t, k, counts, as_stream(stream));
}

int64_t kth_smallest_abs_key(const std::vector<WeightSpan>& spans, int64_t rank, uintptr_t stream) {
  constexpr int kDigitBits = 11;
  int64_t total = 0;
  bool all_f32 = true;
  for (const WeightSpan& s : spans) {
    total += s.size;
    all_f32 = all_f32 && s.dtype == DType::F32;
  }
  if (rank < 0 || rank >= total)
    throw InputError("rank " + std::to_string(rank) + " is outside the " + std::to_string(total) +
                     " weights");
  // A float32 widened to float64 has 29 trailing zero bits in its key: no need to resolve them.
  const int known_low = all_f32 ? 29 : 0;
  const WeightSpan* first = nullptr;
  for (const WeightSpan& span : spans)
    if (span.size > 0 && first == nullptr) first = &span;
  DeviceGuard guard(first->data);  // total > rank >= 0, so some span is not empty
  for (const WeightSpan& span : spans)
    if (span.size > 0 && device_of(span.data) != device_of(first->data))
      throw InputError("all CUDA arrays must be on the same device");
  const cudaStream_t s = as_stream(stream);
  DeviceBuffer<unsigned long long> dhist(size_t{1} << kDigitBits, s);
  std::vector<unsigned long long> hist(size_t{1} << kDigitBits);
  unsigned long long prefix = 0;
  int fixed = 1;  // the sign bit of a key is always 0
  while (64 - fixed > known_low) {
    const int bits = std::min(kDigitBits, 64 - fixed);
    const int shift = 64 - fixed - bits;
    check(cudaMemsetAsync(dhist.get(), 0, hist.size() * sizeof(unsigned long long), s), "cudaMemset");
    for (const WeightSpan& span : spans) {
      if (span.size == 0) continue;
      if (span.dtype == DType::F32)
        digit_histogram<<<grid_for(span.size), kThreads, 0, s>>>(
            static_cast<const float*>(span.data), span.size, prefix, 64 - fixed, shift, bits, dhist.get());
      else
        digit_histogram<<<grid_for(span.size), kThreads, 0, s>>>(
            static_cast<const double*>(span.data), span.size, prefix, 64 - fixed, shift, bits, dhist.get());
      check(cudaGetLastError(), "digit_histogram launch");
    }
    check(cudaMemcpyAsync(hist.data(), dhist.get(), hist.size() * sizeof(unsigned long long),
                          cudaMemcpyDeviceToHost, s),
          "cudaMemcpyAsync");
    check(cudaStreamSynchronize(s), "digit_histogram");
    unsigned long long digit = 0;
    while (rank >= static_cast<int64_t>(hist[digit])) rank -= static_cast<int64_t>(hist[digit++]);
    prefix = (prefix << bits) | digit;
    fixed += bits;
  }
  return static_cast<int64_t>(prefix << (64 - fixed));
}

}  // namespace onnxprune::cuda
