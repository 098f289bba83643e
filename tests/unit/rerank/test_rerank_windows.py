import random

import pytest

from lab.rerank.listwise import sliding_windows


def test_first_default_top100_is_nine_windows_back_to_front():
    assert sliding_windows(100, 20, 10) == [
        (80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40), (10, 30), (0, 20)]
    assert sliding_windows(100) == sliding_windows(100, window=20, stride=10)


@pytest.mark.parametrize("n", [1, 5, 19, 20])
def test_fewer_candidates_than_window_is_one_window(n):
    assert sliding_windows(n, 20, 10) == [(0, n)]


def test_n_not_a_multiple_of_stride_ends_with_a_short_window_at_zero():
    assert sliding_windows(105, 20, 10) == [
        (85, 105), (75, 95), (65, 85), (55, 75), (45, 65), (35, 55), (25, 45), (15, 35), (5, 25), (0, 15)]
    assert sliding_windows(25, 20, 10) == [(5, 25), (0, 15)]      # no redundant (0, 5) after (0, 15)
    assert sliding_windows(21, 20, 10) == [(1, 21), (0, 11)]


def test_other_shapes():
    assert sliding_windows(0) == []
    assert sliding_windows(10, 4, 4) == [(6, 10), (2, 6), (0, 2)]
    assert sliding_windows(6, 3, 1) == [(3, 6), (2, 5), (1, 4), (0, 3)]
    assert sliding_windows(50, 20, 20) == [(30, 50), (10, 30), (0, 10)]


def test_invalid_arguments():
    with pytest.raises(ValueError):
        sliding_windows(10, 5, 6)        # stride > window skips candidates
    with pytest.raises(ValueError):
        sliding_windows(10, 5, 0)
    with pytest.raises(ValueError):
        sliding_windows(10, 0, 1)


def test_properties_on_random_shapes():
    rng = random.Random(0)
    for _ in range(300):
        window = rng.randint(1, 25)
        stride = rng.randint(1, window)
        n = rng.randint(1, 130)
        wins = sliding_windows(n, window, stride)
        assert wins[0][1] == n and wins[-1][0] == 0
        assert all(0 < e - s <= window for s, e in wins)
        assert [s for s, _ in wins] == sorted({s for s, _ in wins}, reverse=True)   # strictly back to front
        assert set().union(*(range(s, e) for s, e in wins)) == set(range(n))
        for (s1, e1), (s2, e2) in zip(wins, wins[1:]):
            assert e1 - e2 == stride                  # consecutive windows move by one stride
