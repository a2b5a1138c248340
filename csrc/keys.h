// Integer keys for |w| <= t comparisons, shared by the CPU and CUDA kernels.
//
// For a float32 or float64 value w, key(w) = its bit pattern with the sign bit cleared. For
// non-negative floats the bit pattern orders like the value, so |a| <= |b| exactly when
// key(a) <= key(b); NaN keys lie above +inf's key. A float64 threshold t >= 0 becomes the key of
// the largest value of the weight's type that is <= t, so `key(w) <= tkey` is exactly
// `float64(|w|) <= t`, NaN and inf included, without rounding t to float32.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define ONNXPRUNE_HD __host__ __device__ __forceinline__
#else
#define ONNXPRUNE_HD inline
#endif

namespace onnxprune {

enum class DType : int { F32 = 0, F64 = 1 };

template <class T> struct KeyOf;
template <> struct KeyOf<float> { using type = int32_t; };
template <> struct KeyOf<double> { using type = int64_t; };

ONNXPRUNE_HD int32_t abs_key(float w) {
  uint32_t bits;
  memcpy(&bits, &w, sizeof bits);
  return static_cast<int32_t>(bits & 0x7fffffffu);
}

ONNXPRUNE_HD int64_t abs_key(double w) {
  uint64_t bits;
  memcpy(&bits, &w, sizeof bits);
  return static_cast<int64_t>(bits & 0x7fffffffffffffffull);
}

// Key of the largest float32 <= t, for a finite t >= 0 (host only: the CUDA side gets keys made here).
int32_t threshold_key_f32(double t);
// Key of t itself (-0.0 is mapped to +0.0), for a finite t >= 0.
int64_t threshold_key_f64(double t);

template <class T> inline typename KeyOf<T>::type threshold_key(double t);
template <> inline int32_t threshold_key<float>(double t) { return threshold_key_f32(t); }
template <> inline int64_t threshold_key<double>(double t) { return threshold_key_f64(t); }

// The value whose key is `key` (a key of a non-negative float64).
inline double value_of_key_f64(int64_t key) {
  double v;
  uint64_t bits = static_cast<uint64_t>(key);
  memcpy(&v, &bits, sizeof v);
  return v;
}

}  // namespace onnxprune
