"""Box and Sample: conventions in the names, clear errors on bad values."""

import pytest

from datatool.core.sample import Box, Sample


@pytest.mark.parametrize("corners,expected", [
    ((10, 20, 30, 40), (10, 20, 30, 40)),  # already top-left / bottom-right
    ((30, 40, 10, 20), (10, 20, 30, 40)),  # dragged from bottom-right
    ((30, 20, 10, 40), (10, 20, 30, 40)),  # dragged from top-right
])
def test_from_corners_orders_any_corner_pair(corners, expected):
    assert Box.from_corners(*corners).xyxy == expected


def test_inverted_box_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="x_min <= x_max"):
        Box(30, 0, 10, 5)


def test_non_finite_box_is_rejected():
    with pytest.raises(ValueError, match="finite"):
        Box(0, 0, float("nan"), 5)


def test_from_xywh_is_continuous():
    # WIDER's x y w h: x_max = x + w (no -1)
    assert Box.from_xywh(5, 6, 10, 20).xyxy == (5, 6, 15, 26)


def test_clip_and_iou():
    b = Box(-5, -5, 10, 10).clip(8, 8)
    assert b.xyxy == (0, 0, 8, 8)
    assert Box(0, 0, 10, 10).iou(Box(5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert Box(0, 0, 1, 1).iou(Box(2, 2, 3, 3)) == 0.0


def test_sample_defaults_and_negative():
    s = Sample("a/b.jpg", 64, 48)
    assert s.image_id == "b.jpg" and s.source_id == "b.jpg"
    assert s.is_negative
    assert not Sample("a.jpg", 64, 48, labeled=False).is_negative


def test_sample_rejects_bad_size():
    with pytest.raises(ValueError, match="width/height"):
        Sample("a.jpg", 0, 48)
