"""onnxprune.stats against a NumPy reference: the same counts, exactly, on every kind of input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from onnxprune import _native, stats

# ---- NumPy references (thresholds kept in float64, as the contract says) ----


def ref_filter(w, t):
    z = np.abs(np.asarray(w)).astype(np.float64) <= np.float64(t)
    return z.reshape(z.shape[0], -1).mean(axis=1) if z.size else np.full(z.shape[0], np.nan)


def ref_sweep(w, thresholds):
    rows = [ref_filter(w, t) for t in thresholds]
    return np.stack(rows) if rows else np.zeros((0, np.shape(w)[0]))


def ref_input_channels(w, t, groups=1):
    w = np.asarray(w)
    o, ig = w.shape[:2]
    if w.size == 0:
        return np.full(ig * groups, np.nan)
    z = (np.abs(w).astype(np.float64) <= np.float64(t)).reshape(groups, o // groups, ig, -1)
    return z.mean(axis=(1, 3)).reshape(-1)


def ref_curve(weights, thresholds):
    a = np.concatenate([np.abs(np.asarray(w, dtype=np.float64)).ravel() for w in weights])
    return np.array([(a <= np.float64(t)).mean() if a.size else np.nan for t in thresholds])


def random_weights(shape, dtype=np.float32, seed=0, zero_share=0.3):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * 0.05).astype(dtype)
    w[rng.random(shape) < zero_share] = 0
    return w


def thresholds_from(w, k, seed=0):
    """Sorted thresholds mixing exact weight magnitudes (ties) and values in between."""
    rng = np.random.default_rng(seed)
    mags = np.abs(np.asarray(w, dtype=np.float64)).ravel()
    mags = mags[np.isfinite(mags)]
    picks = rng.choice(mags, size=k // 2) if mags.size else np.zeros(k // 2)
    return np.sort(np.concatenate([picks, rng.uniform(0, 0.15, size=k - k // 2)]))


# ---- exact agreement on random and shaped inputs ----


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (12, 5), (16, 8, 3, 3), (4, 3, 2, 2, 2)], ids=str)
@pytest.mark.parametrize("k", [1, 3, 5, 64, 700])
def test_sweep_matches_numpy(dtype, shape, k):
    w = random_weights(shape, dtype, seed=k)
    t = thresholds_from(w, k, seed=k)
    got = stats.zero_fraction_sweep(w, t)
    assert got.shape == (k, shape[0]) and got.dtype == np.float64
    np.testing.assert_array_equal(got, ref_sweep(w, t))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (16, 8, 3, 3), (4, 3, 2, 2, 2)], ids=str)
def test_filter_zero_fractions_matches_numpy(dtype, shape):
    w = random_weights(shape, dtype)
    for t in [0.0, 0.01, float(np.abs(w.astype(np.float64)).ravel()[3]), 1.0]:
        np.testing.assert_array_equal(stats.filter_zero_fractions(w, t), ref_filter(w, t))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,groups",
    [((16, 8, 3, 3), 1), ((16, 4, 3, 3), 2), ((16, 1, 3, 3), 16), ((12, 5), 1), ((6, 2, 1, 1), 3),
     ((8, 4, 2, 2, 2), 4)],
    ids=str,
)
def test_input_channel_zero_fractions_matches_numpy(dtype, shape, groups):
    w = random_weights(shape, dtype)
    for t in [0.0, 0.02, 0.2]:
        got = stats.input_channel_zero_fractions(w, t, groups)
        assert got.shape == (shape[1] * groups,)
        np.testing.assert_array_equal(got, ref_input_channels(w, t, groups))


def test_grouped_channels_are_read_by_their_own_filters():
    # Two groups: filters 0-1 read channels 0-1, filters 2-3 read channels 2-3.
    w = np.ones((4, 2, 1, 1), np.float32)
    w[2:, 0] = 0  # channel 2 is read only by filters 2 and 3
    np.testing.assert_array_equal(stats.input_channel_zero_fractions(w, 0.0, groups=2), [0, 0, 1, 0])


@pytest.mark.parametrize("k", [1, 4, 5, 300])
def test_sparsity_curve_pools_every_array(k):
    weights = [random_weights((8, 4, 3, 3), seed=1), random_weights((5,), np.float64, seed=2),
               random_weights((3, 2), np.float16, seed=3), np.zeros((0, 3), np.float32)]
    t = thresholds_from(weights[0], k)
    np.testing.assert_array_equal(stats.sparsity_curve(weights, t), ref_curve(weights, t))


@pytest.mark.parametrize("sparsity", [0.0, 1e-9, 0.1, 0.3333333333333333, 0.5, 0.77, 1.0])
def test_threshold_for_sparsity_inverts_the_curve(sparsity):
    weights = [random_weights((32, 16, 3, 3), seed=4), random_weights((100,), np.float64, seed=5)]
    t = stats.threshold_for_sparsity(weights, sparsity)
    if sparsity == 0:
        assert t == 0.0
        return
    mags = np.sort(np.concatenate([np.abs(w.astype(np.float64)).ravel() for w in weights]))
    assert t in mags  # the threshold is one of the magnitudes
    assert stats.sparsity_curve(weights, [t])[0] >= sparsity
    below = mags[mags < t]
    if below.size:  # any smaller threshold falls short
        assert stats.sparsity_curve(weights, [below[-1]])[0] < sparsity


@pytest.mark.parametrize("dtypes", [(np.float32,), (np.float64,), (np.float32, np.float64)], ids=str)
def test_threshold_for_sparsity_on_many_weights_uses_radix_select(dtypes):
    # More weights than the direct-selection limit, with heavy ties; 32-bit keys when every array
    # is float32, 64-bit keys otherwise.
    rng = np.random.default_rng(6)
    weights = []
    for dtype in dtypes:
        w = rng.choice(np.float32([0, 1e-3, 2e-3, 0.5, 0.7]), size=5_000_000).astype(dtype)
        w[::7] *= rng.standard_normal(w[::7].shape).astype(dtype)
        weights.append(w)
    mags = np.sort(np.concatenate([np.abs(w.astype(np.float64)) for w in weights]))
    for s in [0.1, 0.42, 0.9]:
        t = stats.threshold_for_sparsity(weights, s)
        assert t == mags[int(np.ceil(s * mags.size)) - 1]


# ---- edge cases ----


def test_threshold_stays_float64():
    # 0.1 lies between two float32 values: rounding t to float32 would count the upper one.
    lo = np.nextafter(np.float32(0.1), np.float32(0))
    hi = np.float32(0.1)
    w = np.array([[lo, hi]], np.float32)
    t = 0.1  # float64: lo < 0.1 < hi (float32(0.1) is above 0.1)
    assert float(hi) > t > float(lo)
    np.testing.assert_array_equal(stats.filter_zero_fractions(w, t), [0.5])
    np.testing.assert_array_equal(stats.zero_fraction_sweep(w, [t, float(hi)]), [[0.5], [1.0]])


def test_exact_ties_count_as_zero():
    w = np.array([[0.25, -0.25, 0.5, 0.0]], np.float32)
    np.testing.assert_array_equal(stats.zero_fraction_sweep(w, [0.0, 0.25, 0.5]), [[0.25], [0.75], [1.0]])


def test_nan_and_inf_never_count_as_zero():
    w = np.array([[np.nan, -np.inf, np.inf, 0.0, -0.0, 1e-30]], np.float32)
    np.testing.assert_array_equal(stats.zero_fraction_sweep(w, [0.0, 1.0, 1e300]), [[2 / 6], [3 / 6], [3 / 6]])
    np.testing.assert_array_equal(stats.sparsity_curve([w.astype(np.float64)], [1e308]), [0.5])
    np.testing.assert_array_equal(stats.input_channel_zero_fractions(w.reshape(1, 6), 1.0), [0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cols", [7, 8, 9, 17, 64])
def test_bucket_table_handles_extreme_values_and_ties(dtype, cols):
    # More than a few distinct, well-spaced thresholds take the packed bucket table; its arithmetic
    # wraps around the top of the key range for NaN, inf and negative weights, and rows of any length
    # mix the paired-load loop with its tail.
    info = np.finfo(dtype)
    t = np.array([0.0, 1e-30, 1e-3, 0.1, 0.25, 1.0, 3.0, 1e30, float(info.max)])
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, info.max, -info.max, 0.0, -0.0,
                         info.smallest_subnormal, -info.smallest_subnormal], dtype)  # fmt: skip
    rng = np.random.default_rng(cols)
    pool = np.concatenate([specials, t.astype(dtype), -t.astype(dtype), rng.standard_normal(40).astype(dtype)])
    w = rng.choice(pool, size=(6, cols))
    np.testing.assert_array_equal(stats.zero_fraction_sweep(w, t), ref_sweep(w, t))
    np.testing.assert_array_equal(stats.sparsity_curve([w], t), ref_curve([w], t))


def test_all_zero_and_empty_inputs():
    z = np.zeros((3, 4), np.float32)
    np.testing.assert_array_equal(stats.filter_zero_fractions(z, 0.0), [1, 1, 1])
    assert stats.zero_fraction_sweep(np.zeros((0, 4), np.float32), [0.1]).shape == (1, 0)
    assert stats.zero_fraction_sweep(z, []).shape == (0, 3)
    assert np.isnan(stats.filter_zero_fractions(np.zeros((2, 0), np.float32), 0.1)).all()
    assert np.isnan(stats.sparsity_curve([], [0.1])).all()
    assert stats.sparsity_curve([z], []).shape == (0,)


def test_non_contiguous_views_match_their_copies():
    base = random_weights((16, 8, 3, 3), seed=7)
    for view in [base[:, ::2], base[::3], base.transpose(1, 0, 2, 3), base[..., ::-1]]:
        assert not view.flags.c_contiguous
        t = thresholds_from(view, 9)
        np.testing.assert_array_equal(stats.zero_fraction_sweep(view, t), ref_sweep(view, t))
        np.testing.assert_array_equal(
            stats.input_channel_zero_fractions(view, 0.03), ref_input_channels(view, 0.03)
        )


def test_duplicate_thresholds_give_equal_rows():
    w = random_weights((6, 10))
    out = stats.zero_fraction_sweep(w, [0.01, 0.01, 0.02, 0.02, 0.02, 0.3])
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[2], out[4])


def test_dense_thresholds_take_the_general_path():
    # Thresholds one float32 apart are closer than any table bucket: the general lookup runs.
    w = random_weights((20, 50), seed=8)
    mags = np.unique(np.abs(w[w != 0]))[:40].astype(np.float64)
    t = np.sort(np.concatenate([mags, np.nextafter(mags.astype(np.float32), np.float32(1)).astype(np.float64)]))
    np.testing.assert_array_equal(stats.zero_fraction_sweep(w, t), ref_sweep(w, t))


@pytest.mark.parametrize("shape", [(1, 300_000), (3, 100_000), (64, 1000), (300, 50), (1000, 9)], ids=str)
def test_threads_give_the_same_result(shape):
    # Few long rows are split across threads; many rows are not: both must agree with serial.
    w = random_weights(shape, seed=9)
    t = thresholds_from(w, 40)
    serial = stats.zero_fraction_sweep(w, t, threads=1)
    np.testing.assert_array_equal(serial, ref_sweep(w, t))
    for threads in (2, 3, 8):
        np.testing.assert_array_equal(stats.zero_fraction_sweep(w, t, threads=threads), serial)
        np.testing.assert_array_equal(stats.sparsity_curve([w], t, threads=threads), ref_curve([w], t))
        assert stats.threshold_for_sparsity([w], 0.6, threads=threads) == stats.threshold_for_sparsity(
            [w], 0.6, threads=1
        )


def test_accepts_torch_tensors_including_those_that_require_grad():
    torch = pytest.importorskip("torch")
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    np.testing.assert_array_equal(stats.filter_zero_fractions(w, 0.5), ref_filter(w.detach().numpy(), 0.5))


# ---- bad input: ValueError with a message, never a crash ----


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: stats.filter_zero_fractions(np.float32(1.0), 0.1), "at least 1 dimension"),
        (lambda: stats.input_channel_zero_fractions(np.ones(4, np.float32), 0.1), "at least 2 dimensions"),
        (lambda: stats.input_channel_zero_fractions(np.ones((6, 2, 3, 3), np.float32), 0.1, 4), "must divide"),
        (lambda: stats.input_channel_zero_fractions(np.ones((6, 2), np.float32), 0.1, 0), "groups must be >= 1"),
        (lambda: stats.input_channel_zero_fractions(np.ones((6, 2), np.float32), 0.1, 1.5), "groups must be an integer"),
        (lambda: stats.filter_zero_fractions(np.ones((2, 2), np.float32), -0.1), "finite and >= 0"),
        (lambda: stats.filter_zero_fractions(np.ones((2, 2), np.float32), float("nan")), "finite and >= 0"),
        (lambda: stats.filter_zero_fractions(np.ones((2, 2), np.float32), float("inf")), "finite and >= 0"),
        (lambda: stats.zero_fraction_sweep(np.ones((2, 2), np.float32), [0.2, 0.1]), "sorted"),
        (lambda: stats.zero_fraction_sweep(np.ones((2, 2), np.float32), [[0.1]]), "1-D"),
        (lambda: stats.sparsity_curve([np.ones(3, np.float32)], [0.3, 0.2, 0.4]), "sorted"),
        (lambda: stats.filter_zero_fractions(np.ones((2, 2), np.int8), 0.1), "floating point"),
        (lambda: stats.filter_zero_fractions(np.ones((2, 2), np.complex64), 0.1), "floating point"),
        (lambda: stats.sparsity_curve(np.ones(3, np.float32), [0.1]), "list of arrays"),
        (lambda: stats.threshold_for_sparsity([np.ones(3, np.float32)], 1.5), r"in \[0, 1\]"),
        (lambda: stats.threshold_for_sparsity([np.ones(3, np.float32)], float("nan")), r"in \[0, 1\]"),
        (lambda: stats.threshold_for_sparsity([], 0.5), "no weights"),
        (lambda: stats.threshold_for_sparsity([np.float32([1, np.nan])], 0.9), "cannot be reached"),
        (lambda: stats.filter_zero_fractions(np.ones((2, 2), np.float32), 0.1, threads=0), "threads"),
        (lambda: stats.filter_zero_fractions(np.ones((2, 2), np.float32), 0.1, threads=-2), "threads"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_native_module_refuses_what_the_wrapper_would_convert():
    t = np.array([0.1])
    with pytest.raises(ValueError, match="C-contiguous"):
        _native.zero_fraction_sweep(np.ones((4, 4), np.float32)[:, ::2], t)
    with pytest.raises(ValueError, match="float32 or float64"):
        _native.zero_fraction_sweep(np.ones((4, 4), np.float16), t)
    with pytest.raises(ValueError, match="float64"):
        _native.zero_fraction_sweep(np.ones((4, 4), np.float32), t.astype(np.float32))
    with pytest.raises(ValueError, match="not a NumPy array"):
        _native.sparsity_curve([[1.0, 2.0]], t)


def test_cuda_entry_points_refuse_without_cuda():
    if _native.built_with_cuda:
        pytest.skip("built with CUDA: covered by test_stats_cuda.py")
    with pytest.raises(RuntimeError, match="without CUDA"):
        _native.cuda_zero_fraction_sweep(0, [1], "<f4", np.array([0.1]))


# ---- property test ----


@settings(max_examples=150, deadline=None)
@given(
    w=hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=6),
        elements=st.floats(-2, 2, width=16, allow_subnormal=True),
    ),
    extra=st.lists(st.floats(0, 3, allow_subnormal=True), max_size=12),
    picks=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_property_sweep_and_curve_match_numpy(w, extra, picks):
    mags = np.abs(w.astype(np.float64)).ravel()
    ties = [float(mags[p % mags.size]) for p in picks] if mags.size else []
    t = np.sort(np.array(extra + ties, dtype=np.float64))
    np.testing.assert_array_equal(stats.zero_fraction_sweep(w, t), ref_sweep(w, t))
    np.testing.assert_array_equal(stats.sparsity_curve([w], t), ref_curve([w], t))
    if w.ndim >= 2 and w.shape[0] > 0:
        for t0 in t[:3]:
            np.testing.assert_array_equal(stats.input_channel_zero_fractions(w, t0), ref_input_channels(w, t0))


def test_sweep_writes_into_out():
    w = random_weights((6, 10))
    t = thresholds_from(w, 7)
    out = np.full((7, 6), -1.0)
    assert stats.zero_fraction_sweep(w, t, out=out) is out
    np.testing.assert_array_equal(out, ref_sweep(w, t))
    for bad in [np.zeros((6, 7)), np.zeros((7, 6), np.float32), np.zeros((7, 12))[:, ::2], [[0.0] * 6] * 7]:
        with pytest.raises(ValueError, match="out must be"):
            stats.zero_fraction_sweep(w, t, out=bad)


def test_repeated_and_alternating_thresholds_reuse_nothing_stale():
    # The bucket table is cached per thread for identical thresholds: alternate to catch staleness.
    w = random_weights((20, 30), seed=11)
    a, b = thresholds_from(w, 40, seed=1), thresholds_from(w, 40, seed=2)
    for t in (a, a, b, a, b, b):
        np.testing.assert_array_equal(stats.zero_fraction_sweep(w, t), ref_sweep(w, t))
        np.testing.assert_array_equal(stats.sparsity_curve([w], t), ref_curve([w], t))
