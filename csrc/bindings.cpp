// Python bindings of the zero-statistics kernels (module onnxprune._native). Registration and
// argument checks only: arrays must already be C-contiguous float32/float64 (onnxprune.stats
// converts visibly); anything else raises ValueError instead of being cast here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cfloat>
#include <limits>
#include <string>
#include <tuple>

#include "zero_stats.h"
#ifdef ONNXPRUNE_WITH_CUDA
#include "zero_stats_cuda.h"
#endif

namespace py = pybind11;
using namespace onnxprune;

namespace {

DType dtype_of(const py::dtype& dt, const std::string& what) {
  if (dt.kind() == 'f' && dt.itemsize() == 4) return DType::F32;
  if (dt.kind() == 'f' && dt.itemsize() == 8) return DType::F64;
  throw InputError(what + " must be float32 or float64; got " + py::str(dt).cast<std::string>());
}

WeightSpan host_span(const py::array& a, const std::string& what) {
  const DType dt = dtype_of(a.dtype(), what);
  if (!(a.flags() & py::array::c_style))
    throw InputError(what + " must be C-contiguous (onnxprune.stats makes a contiguous copy)");
  return WeightSpan{a.data(), dt, static_cast<int64_t>(a.size())};
}

DType dtype_of_typestr(const std::string& typestr, const std::string& what) {
  if (typestr == "<f4") return DType::F32;
  if (typestr == "<f8") return DType::F64;
  throw InputError(what + " must be float32 ('<f4') or float64 ('<f8'); got '" + typestr + "'");
}

int64_t product(const std::vector<int64_t>& shape, size_t from) {
  int64_t p = 1;
  for (size_t i = from; i < shape.size(); ++i) {
    if (shape[i] < 0) throw InputError("shape has a negative dimension");
    p *= shape[i];
  }
  return p;
}

std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

void require_rank(const std::vector<int64_t>& shape, size_t rank, const std::string& what) {
  if (shape.size() < rank)
    throw InputError(what + " must have at least " + std::to_string(rank) + " dimension" +
                     (rank > 1 ? "s" : "") + "; got shape with " + std::to_string(shape.size()));
}

// Throws unless `groups` splits the conv weight's output channels evenly.
void check_groups(const std::vector<int64_t>& shape, int64_t groups) {
  if (groups < 1) throw InputError("groups must be >= 1; got " + std::to_string(groups));
  if (shape[0] % groups != 0)
    throw InputError("groups (" + std::to_string(groups) + ") must divide the weight's " +
                     std::to_string(shape[0]) + " output channels (axis 0)");
}

py::array_t<double> thresholds_view(const py::array& t) {
  if (t.ndim() != 1 || !(t.flags() & py::array::c_style) ||
      !t.dtype().is(py::dtype::of<double>()))
    throw InputError("thresholds must be a contiguous 1-D float64 array");
  return py::array_t<double>(t);
}

// The (k, rows) float64 result array: `out` when given (checked, then written in place), else new.
py::array_t<double> result_array(const py::object& out, int64_t k, int64_t rows) {
  if (out.is_none()) return py::array_t<double>({k, rows});
  if (!py::isinstance<py::array>(out)) throw InputError("out must be a NumPy array or None");
  const auto a = out.cast<py::array>();
  if (!a.dtype().is(py::dtype::of<double>()) || !(a.flags() & py::array::c_style) || !a.writeable() ||
      a.ndim() != 2 || a.shape(0) != k || a.shape(1) != rows)
    throw InputError("out must be a writable C-contiguous float64 array of shape (" + std::to_string(k) +
                     ", " + std::to_string(rows) + ")");
  return py::array_t<double>(a);
}

py::array_t<double> sweep(const WeightSpan& span, const std::vector<int64_t>& shape,
                          const py::array& thresholds, const py::object& out_arg, bool on_cuda,
                          uintptr_t stream, int threads) {
  require_rank(shape, 1, "weight");
  const auto t = thresholds_view(thresholds);
  const int64_t k = t.size(), rows = shape[0], cols = product(shape, 1);
  py::array_t<double> out = result_array(out_arg, k, rows);
  const double* tp = t.data();
  double* op = out.mutable_data();
  {
    py::gil_scoped_release release;  // the kernels touch only raw buffers kept alive by the caller
    if (on_cuda) {
#ifdef ONNXPRUNE_WITH_CUDA
      cuda::zero_fraction_sweep(span, rows, cols, tp, k, op, stream);
#endif
    } else {
      zero_fraction_sweep(span, rows, cols, tp, k, op, threads);
    }
  }
  return out;
}

py::array_t<double> input_channels(const WeightSpan& span, const std::vector<int64_t>& shape,
                                   double threshold, int64_t groups, bool on_cuda, uintptr_t stream,
                                   int threads) {
  require_rank(shape, 2, "weight");
  check_groups(shape, groups);
  const int64_t spatial = product(shape, 2);
  py::array_t<double> out(shape[1] * groups);
  double* op = out.mutable_data();
  {
    py::gil_scoped_release release;  // raw buffers only
    if (on_cuda) {
#ifdef ONNXPRUNE_WITH_CUDA
      cuda::input_channel_zero_fractions(span, shape[0], shape[1], spatial, groups, threshold, op,
                                         stream);
#endif
    } else {
      input_channel_zero_fractions(span, shape[0], shape[1], spatial, groups, threshold, op, threads);
    }
  }
  return out;
}

std::vector<int64_t> zero_counts(const std::vector<WeightSpan>& spans, const double* t, int64_t k,
                                 bool on_cuda, uintptr_t stream, int threads) {
  check_thresholds(t, k);
  std::vector<int64_t> counts(static_cast<size_t>(k), 0);
  for (const WeightSpan& s : spans) {
    if (on_cuda) {
#ifdef ONNXPRUNE_WITH_CUDA
      cuda::add_zero_counts(s, t, k, counts.data(), stream);
#endif
    } else {
      add_zero_counts(s, t, k, counts.data(), threads);
    }
  }
  return counts;
}

int64_t total_size(const std::vector<WeightSpan>& spans) {
  int64_t n = 0;
  for (const WeightSpan& s : spans) n += s.size;
  return n;
}

py::array_t<double> curve(const std::vector<WeightSpan>& spans, const py::array& thresholds,
                          bool on_cuda, uintptr_t stream, int threads) {
  const auto t = thresholds_view(thresholds);
  const int64_t k = t.size();
  py::array_t<double> out(k);
  double* op = out.mutable_data();
  const double* tp = t.data();
  {
    py::gil_scoped_release release;  // raw buffers only
    const std::vector<int64_t> counts = zero_counts(spans, tp, k, on_cuda, stream, threads);
    const double n = static_cast<double>(total_size(spans));
    for (int64_t i = 0; i < k; ++i) op[i] = static_cast<double>(counts[i]) / n;
  }
  return out;
}

double threshold_at(const std::vector<WeightSpan>& spans, double sparsity, bool on_cuda,
                    uintptr_t stream, int threads) {
  py::gil_scoped_release release;  // raw buffers only
  const double largest = DBL_MAX;
  const int64_t finite = zero_counts(spans, &largest, 1, on_cuda, stream, threads)[0];
  const int64_t rank = rank_for_sparsity(total_size(spans), finite, sparsity);
  if (rank < 0) return 0.0;
  int64_t key = 0;
  if (on_cuda) {
#ifdef ONNXPRUNE_WITH_CUDA
    key = cuda::kth_smallest_abs_key(spans, rank, stream);
#endif
  } else {
    key = kth_smallest_abs_key(spans, rank, threads);
  }
  return value_of_key_f64(key);
}

std::vector<WeightSpan> host_spans(const py::list& weights) {
  std::vector<WeightSpan> spans;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (!py::isinstance<py::array>(weights[i]))
      throw InputError("weights[" + std::to_string(i) + "] is not a NumPy array");
    spans.push_back(host_span(weights[i].cast<py::array>(), "weights[" + std::to_string(i) + "]"));
  }
  return spans;
}

// A CUDA array as (pointer, size, typestr) taken from __cuda_array_interface__ by the wrapper.
using CudaArray = std::tuple<uintptr_t, int64_t, std::string>;

void require_cuda() {
#ifndef ONNXPRUNE_WITH_CUDA
  throw std::runtime_error(
      "onnxprune was built without CUDA (nvcc was not found when it was compiled); pass NumPy arrays");
#endif
}

WeightSpan cuda_span(uintptr_t ptr, const std::vector<int64_t>& shape, const std::string& typestr) {
  require_cuda();
  return WeightSpan{reinterpret_cast<const void*>(ptr), dtype_of_typestr(typestr, "weight"),
                    product(shape, 0)};
}

std::vector<WeightSpan> cuda_spans(const std::vector<CudaArray>& arrays) {
  require_cuda();
  std::vector<WeightSpan> spans;
  for (size_t i = 0; i < arrays.size(); ++i) {
    const auto& [ptr, size, typestr] = arrays[i];
    if (size < 0) throw InputError("weights[" + std::to_string(i) + "] has a negative size");
    spans.push_back(WeightSpan{reinterpret_cast<const void*>(ptr),
                               dtype_of_typestr(typestr, "weights[" + std::to_string(i) + "]"),
                               size});
  }
  return spans;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "Native zero-fraction statistics of weight tensors (wrapped by onnxprune.stats).";
#ifdef ONNXPRUNE_WITH_CUDA
  m.attr("built_with_cuda") = true;
#else
  m.attr("built_with_cuda") = false;
#endif
  m.def(
      "cuda_available",
      []() {
#ifdef ONNXPRUNE_WITH_CUDA
        return cuda::available();
#else
        return false;
#endif
      },
      "True when the module was built with CUDA and a CUDA device can be used.");

  m.def(
      "zero_fraction_sweep",
      [](const py::array& w, const py::array& thresholds, int threads, const py::object& out) {
        return sweep(host_span(w, "weight"), shape_of(w), thresholds, out, false, 0, threads);
      },
      py::arg("w"), py::arg("thresholds"), py::arg("threads") = 0, py::arg("out") = py::none(),
      "Fractions (K, F) of each filter's weights (axis 0) with |w| <= thresholds[k], into out if given.");
  m.def(
      "input_channel_zero_fractions",
      [](const py::array& w, double threshold, int64_t groups, int threads) {
        return input_channels(host_span(w, "weight"), shape_of(w), threshold, groups, false, 0,
                              threads);
      },
      py::arg("w"), py::arg("threshold"), py::arg("groups") = 1, py::arg("threads") = 0,
      "Fractions (I,) of the weights reading each input channel with |w| <= threshold.");
  m.def(
      "sparsity_curve",
      [](const py::list& weights, const py::array& thresholds, int threads) {
        return curve(host_spans(weights), thresholds, false, 0, threads);
      },
      py::arg("weights"), py::arg("thresholds"), py::arg("threads") = 0,
      "Fraction (K,) of all weights with |w| <= thresholds[k].");
  m.def(
      "threshold_for_sparsity",
      [](const py::list& weights, double sparsity, int threads) {
        return threshold_at(host_spans(weights), sparsity, false, 0, threads);
      },
      py::arg("weights"), py::arg("sparsity"), py::arg("threads") = 0,
      "Smallest threshold at which the fraction of all weights with |w| <= t reaches sparsity.");

  m.def(
      "cuda_zero_fraction_sweep",
      [](uintptr_t ptr, const std::vector<int64_t>& shape, const std::string& typestr,
         const py::array& thresholds, uintptr_t stream, const py::object& out) {
        return sweep(cuda_span(ptr, shape, typestr), shape, thresholds, out, true, stream, 0);
      },
      py::arg("ptr"), py::arg("shape"), py::arg("typestr"), py::arg("thresholds"),
      py::arg("stream") = 0, py::arg("out") = py::none(),
      "zero_fraction_sweep of a C-contiguous CUDA array (results in host memory).");
  m.def(
      "cuda_input_channel_zero_fractions",
      [](uintptr_t ptr, const std::vector<int64_t>& shape, const std::string& typestr,
         double threshold, int64_t groups, uintptr_t stream) {
        return input_channels(cuda_span(ptr, shape, typestr), shape, threshold, groups, true,
                              stream, 0);
      },
      py::arg("ptr"), py::arg("shape"), py::arg("typestr"), py::arg("threshold"),
      py::arg("groups") = 1, py::arg("stream") = 0,
      "input_channel_zero_fractions of a C-contiguous CUDA array.");
  m.def(
      "cuda_sparsity_curve",
      [](const std::vector<CudaArray>& arrays, const py::array& thresholds, uintptr_t stream) {
        return curve(cuda_spans(arrays), thresholds, true, stream, 0);
      },
      py::arg("arrays"), py::arg("thresholds"), py::arg("stream") = 0,
      "sparsity_curve of CUDA arrays given as (pointer, size, typestr).");
  m.def(
      "cuda_threshold_for_sparsity",
      [](const std::vector<CudaArray>& arrays, double sparsity, uintptr_t stream) {
        return threshold_at(cuda_spans(arrays), sparsity, true, stream, 0);
      },
      py::arg("arrays"), py::arg("sparsity"), py::arg("stream") = 0,
      "threshold_for_sparsity of CUDA arrays given as (pointer, size, typestr).");
}
