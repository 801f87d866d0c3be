import pytest

from pipelines.captions.windows import caption_windows, sample_indices


def spans(n):
    return [(s, e) for s, e, _ in caption_windows(n)]


def test_short_clip_is_one_window():
    (start, end, idx), = caption_windows(72)
    assert (start, end) == (0, 72)
    assert idx == [4, 13, 22, 31, 40, 49, 58, 67]


def test_exact_window():
    (start, end, idx), = caption_windows(200)
    assert (start, end) == (0, 200)
    assert idx == [12, 37, 62, 87, 112, 137, 162, 187]


def test_short_remainder_merges_into_previous():
    assert spans(450) == [(0, 200), (200, 450)]
    last = caption_windows(450)[-1][2]
    assert last == [215, 246, 278, 309, 340, 371, 403, 434]


def test_long_remainder_is_its_own_window():
    assert spans(530) == [(0, 200), (200, 400), (400, 530)]
    assert spans(500) == [(0, 200), (200, 400), (400, 500)]  # exactly half a window stays separate
    assert spans(499) == [(0, 200), (200, 499)]


@pytest.mark.parametrize("n", [1, 5, 72, 199, 200, 201, 450, 530, 1000, 1099])
def test_windows_cover_clip_and_indices_inside(n):
    windows = caption_windows(n)
    assert windows[0][0] == 0 and windows[-1][1] == n
    for (s, e, idx), nxt in zip(windows, windows[1:] + [None]):
        assert len(idx) == 8
        assert all(s <= i < e for i in idx)
        assert idx == sorted(idx)
        if nxt is not None:
            assert nxt[0] == e


def test_empty_and_bad_arguments():
    assert caption_windows(0) == []
    with pytest.raises(ValueError):
        caption_windows(10, window=0)
    with pytest.raises(ValueError):
        sample_indices(5, 5)
