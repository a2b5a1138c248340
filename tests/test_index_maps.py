"""Index maps on their own: what each constructor means, composition, inversion, removal."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune.index_maps import (
    IndexMap, compose, identity, inverse, offset, removed_positions, repeat, sub_range,
)  # fmt: skip


def test_concat_then_flatten():
    # Two spaces of 2 and 3 channels concatenated, then flattened with H*W = 4.
    second_input = compose(offset(3, 2, 5), repeat(5, 4))
    assert second_input.dst_size == 20
    np.testing.assert_array_equal(second_input.positions, [[8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]])
    np.testing.assert_array_equal(removed_positions(second_input, [True, False, True]), [12, 13, 14, 15])


def test_slice_of_a_padded_space():
    # ResNet shortcut: Slice every other channel is not a range, but Pad on channels is an offset:
    # 16 channels padded by 8 on each side land on positions 8..23 of 32.
    padded = offset(16, 8, 32)
    np.testing.assert_array_equal(removed_positions(padded, np.arange(16) != 3), [11])
    # A Split output [4, 12) of 16 channels: channel 5 lands on position 1, channel 2 nowhere.
    split = sub_range(16, 4, 12)
    assert split.dst_size == 8
    np.testing.assert_array_equal(removed_positions(split, ~np.isin(np.arange(16), [2, 5])), [1])


def test_inverse_and_identity():
    assert inverse(identity(4)) == identity(4)
    assert inverse(inverse(repeat(3, 4))) == repeat(3, 4)
    assert compose(offset(3, 2, 5), inverse(offset(3, 2, 5))) == identity(3)
    np.testing.assert_array_equal(inverse(offset(2, 1, 4)).positions[:, 0], [-1, 0, 1, -1])


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: offset(3, 2, 4), "does not fit"),
        (lambda: sub_range(4, 3, 2), "not inside"),
        (lambda: repeat(3, 0), "factor"),
        (lambda: compose(identity(3), identity(4)), "cannot compose"),
        (lambda: IndexMap(np.array([[0, 0]]), 2), "same position twice"),
        (lambda: IndexMap(np.array([[0], [2]]), 2), r"\[0, 2\)"),
        (lambda: removed_positions(identity(3), [True, False]), "keep mask"),
    ],
)
def test_bad_maps_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_maps_are_read_only():
    m = repeat(2, 2)
    with pytest.raises(ValueError):
        m.positions[0, 0] = 3


@st.composite
def chains(draw):
    """A random chain of 3 composable maps starting from a space of `size` channels."""
    size = draw(st.integers(1, 6))
    maps = []
    for _ in range(3):
        kind = draw(st.sampled_from(["identity", "offset", "sub_range", "repeat", "inverse-repeat"]))
        if kind == "identity":
            m = identity(size)
        elif kind == "offset":
            start = draw(st.integers(0, 3))
            m = offset(size, start, size + start + draw(st.integers(0, 3)))
        elif kind == "sub_range":
            start = draw(st.integers(0, size))
            m = sub_range(size, start, draw(st.integers(start, size)))
        elif kind == "repeat":
            m = repeat(size, draw(st.integers(1, 3)))
        else:
            m = inverse(repeat(size, 1))
        maps.append(m)
        size = m.dst_size
    return maps


@settings(max_examples=200, deadline=None)
@given(chain=chains(), data=st.data())
def test_property_composition(chain, data):
    a, b, c = chain
    assert compose(compose(a, b), c) == compose(a, compose(b, c))
    ab = compose(a, b)
    assert inverse(inverse(ab)) == ab
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=a.src_size, max_size=a.src_size)), dtype=bool)
    # Removing through the composed map = removing on a's axis, then through b.
    mid = np.ones(a.dst_size, dtype=bool)
    mid[removed_positions(a, keep)] = False
    np.testing.assert_array_equal(removed_positions(ab, keep), removed_positions(b, mid))
    # Each kept channel keeps every position it had.
    kept_positions = ab.positions[keep]
    assert not np.isin(kept_positions[kept_positions >= 0], removed_positions(ab, keep)).any()
