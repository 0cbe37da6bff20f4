"""`datatool capture`: real video files (cv2.VideoWriter) and folders, names, sessions, face crops,
fast failures; the Qt preview window under the offscreen platform."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from datatool.capture import Schedule, capture, parse_size, target_images_dir
from datatool.core.faces import cut_face
from datatool.core.provenance import capture_info, session_of, stamp_jpeg
from datatool.cli import cli
from datatool.core.errors import DatatoolError
from datatool.core.sample import Box
from tests.conftest import write_image

NAME = re.compile(r"^(\d{8}-\d{6}-[0-9a-f]{4})_(\d{4})\.jpg$")


def _video(path: Path, *, fourcc: str, fps: float, frames: int, size=(32, 24)) -> Path:
    """A real video file; frame i is a flat grey of level 2*i mod 256 (so frames can be told apart)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened(), f"this OpenCV build cannot write {fourcc}"
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), (2 * i) % 256, np.uint8))
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """10 s of MJPG video at 10 fps (MJPG in .avi is written by every headless OpenCV build)."""
    return _video(tmp_path_factory.mktemp("video") / "clip.avi", fourcc="MJPG", fps=10, frames=100)


def _jpgs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg"))


@pytest.mark.parametrize("fourcc,ext,fps,frames,interval,expected", [
    ("MJPG", "avi", 10, 100, 0.5, 20),  # 10 s clip at 0.5 s: 20 frames, however fast it decodes
    ("MJPG", "avi", 10, 100, 1.0, 10),  # 1 s interval: one frame a second
    ("MJPG", "avi", 10, 100, 0.0, 100),  # interval 0: every frame
    ("mp4v", "mp4", 25, 250, 0.5, 20),  # 25 fps mp4: the interval is media time, not frames
    ("MJPG", "avi", 4, 20, 0.3, 16),  # frames every 0.25 s, 0.3 s slots: 16 of the 17 slots hold a frame
])
def test_video_interval_is_media_time(tmp_path, fourcc, ext, fps, frames, interval, expected):
    video = _video(tmp_path / f"v.{ext}", fourcc=fourcc, fps=fps, frames=frames)
    result = capture(tmp_path / "ds", source=str(video), count=0, interval=interval, progress=False)
    files = _jpgs(tmp_path / "ds" / "images")
    assert len(files) == len(result.written) == expected
    assert result.source_ended
    times = [capture_info(p)["time"] for p in result.written]
    assert times == sorted(times) and times[0] == 0.0
    if interval:
        # one frame per interval slot: never two in the same slot, never a slot skipped if a frame exists
        slots = [int(t / interval + 1e-6) for t in times]
        assert len(set(slots)) == len(slots)


@pytest.mark.parametrize("interval,countdown,every,times,expected", [
    (0.5, 0, False, [0, .1, .2, .5, .55, 1.2], "TSSTST"),  # one frame per 0.5 s slot
    (0.5, 1.0, False, [0, .5, 1.0, 1.2, 1.5], "CCTST"),  # a camera counts down first, then slot 0
    (0.5, 0, False, [0, 2.3, 2.4, 2.5], "TTST"),  # after a stall: no burst of catch-up frames
    (0.3, 0, False, [0, .25, .5, .75, 1.0], "TSTTT"),  # frames off the grid: first one in each slot
    (0.0, 0, False, [0, 0, 0.01], "TTT"),  # interval 0: every frame
    (9.0, 0, True, [0, 1, 2], "TTT"),  # a folder: every image, whatever the interval
])
def test_schedule_keeps_the_first_frame_of_each_slot(interval, countdown, every, times, expected):
    schedule = Schedule(interval, countdown=countdown, every=every)
    got = "".join(schedule.offer(t)[0][0].upper() for t in times)
    assert got == expected


def test_schedule_times_count_from_the_end_of_the_countdown():
    schedule = Schedule(1.0, countdown=3.0)
    assert schedule.offer(0.5) == ("countdown", 2.5)
    assert schedule.offer(4.25) == ("take", 1.25)


def test_names_and_session_stamp(tmp_path, clip):
    result = capture(tmp_path / "ds", source=str(clip), count=5, interval=0.5, progress=False)
    names = [p.name for p in _jpgs(tmp_path / "ds" / "images")]
    assert names == [p.name for p in result.written]
    matches = [NAME.match(n) for n in names]
    assert all(matches), names
    assert {m.group(1) for m in matches} == {result.session}
    assert [int(m.group(2)) for m in matches] == [1, 2, 3, 4, 5]
    assert {session_of(p) for p in result.written} == {result.session}
    # no JSON is created: captured frames are unlabeled, not negatives
    assert not list((tmp_path / "ds" / "images").glob("*.json"))
    record = __import__("json").loads((tmp_path / "ds" / "dataset.json").read_text())
    assert record["captures"][0]["session"] == result.session and record["captures"][0]["frames"] == 5


def test_frames_follow_the_video(tmp_path, clip):
    # at 10 fps and 0.5 s, saved frame k is video frame 5k, whose grey level is 10k
    result = capture(tmp_path / "ds", source=str(clip), count=4, interval=0.5, progress=False)
    from datatool.core.images import load_rgb

    levels = [float(load_rgb(p).mean()) for p in result.written]
    assert levels == pytest.approx([0, 10, 20, 30], abs=3)


def test_second_run_never_overwrites(tmp_path, clip):
    first = capture(tmp_path / "ds", source=str(clip), count=3, progress=False)
    before = {p: p.read_bytes() for p in first.written}
    second = capture(tmp_path / "ds", source=str(clip), count=3, progress=False)
    assert first.session != second.session
    assert len(_jpgs(tmp_path / "ds" / "images")) == 6
    assert all(p.read_bytes() == b for p, b in before.items())
    record = __import__("json").loads((tmp_path / "ds" / "dataset.json").read_text())
    assert [c["session"] for c in record["captures"]] == [first.session, second.session]


def test_same_session_id_continues_numbering(tmp_path, clip):
    # a name already taken (same session id) is skipped, never replaced
    a = capture(tmp_path / "ds", source=str(clip), count=2, progress=False, session="20250101-000000-abcd")
    b = capture(tmp_path / "ds", source=str(clip), count=2, progress=False, session="20250101-000000-abcd")
    assert [p.name[-8:] for p in a.written + b.written] == ["0001.jpg", "0002.jpg", "0003.jpg", "0004.jpg"]


def test_folder_source_in_sorted_order_skipping_corrupt(tmp_path):
    src = tmp_path / "src"
    for name, level in [("b.png", 100), ("a.jpg", 50), ("c/d.png", 150)]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(np.full((20, 30, 3), level, np.uint8)).save(src / name)
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (src / "notes.txt").write_text("ignored")
    result = capture(tmp_path / "ds", source=str(src), count=0, progress=False)
    from datatool.core.images import load_rgb

    assert [round(float(load_rgb(p).mean()) / 50) for p in result.written] == [1, 2, 3]  # a, b, c/d
    assert [i.file for i in result.issues] == [str(src / "broken.jpg")]


def test_size_shrinks_file_sources_keeping_aspect(tmp_path):
    write_image(tmp_path / "src" / "big.png", 200, 100)
    result = capture(tmp_path / "ds", source=str(tmp_path / "src"), size=(50, 50), progress=False)
    from datatool.core.images import image_size

    assert image_size(result.written[0]) == (50, 25)


@pytest.mark.parametrize("source,expected", [
    ("7", "camera 7 cannot be opened"),  # no such camera: says which and what to try
    ("missing.mp4", "no such file or folder"),  # a typo in a path
    ("junk.mp4", "not a video OpenCV can decode"),  # a file that is not a video
])
def test_bad_source_fails_fast_with_a_clear_message(tmp_path, source, expected):
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video")
    if source == "junk.mp4":
        source = str(tmp_path / source)
    t0 = time.monotonic()
    result = CliRunner().invoke(cli, ["capture", str(tmp_path / "ds"), "--source", source])
    assert time.monotonic() - t0 < 5
    assert result.exit_code == 1
    assert expected in result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    if source == "7":
        assert "--source path/to/video.mp4" in result.output


@pytest.mark.parametrize("args,message", [
    (["--crop-faces"], "needs --person"),  # crops go to people/NAME
    (["--person", "../x", "--crop-faces"], "not usable as a folder name"),
    (["--size", "640by480"], "WIDTHxHEIGHT"),
])
def test_bad_options_are_clear_errors(tmp_path, clip, args, message):
    result = CliRunner().invoke(cli, ["capture", str(tmp_path / "ds"), "--source", str(clip), *args])
    assert result.exit_code != 0 and message in result.output


def test_crop_faces_from_a_real_photo(tmp_path):
    """The astronaut photo and a noise image: one crop saved, one frame skipped."""
    from skimage import data

    from datatool.core.detect import get_detector
    from datatool.core.images import load_rgb

    src = tmp_path / "src"
    src.mkdir()
    from PIL import Image

    Image.fromarray(data.astronaut()).save(src / "astronaut.png")
    write_image(src / "noise.png", 120, 90)
    result = CliRunner().invoke(cli, ["capture", str(tmp_path / "ds"), "--source", str(src), "--person", "eileen",
                                      "--crop-faces", "--detector", "haar", "--crop-size", "96"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 frame(s) with no face" in result.output
    crops = _jpgs(tmp_path / "ds" / "people" / "eileen")
    assert len(crops) == 1 and not (tmp_path / "ds" / "images").exists()
    crop = load_rgb(crops[0])
    assert crop.shape == (96, 96, 3)
    assert capture_info(crops[0])["person"] == "eileen"
    # the crop is the face: a detector finds one face filling most of it
    (face,) = get_detector("haar").detect(crop)
    assert face.box.area / (96 * 96) > 0.35


@pytest.mark.parametrize("box,shape,margin,size", [
    (Box(40, 40, 60, 60), (100, 100), 0.2, 32),  # centred: a 24 px square around the box
    (Box(0, 0, 30, 50), (100, 200), 0.5, 16),  # at the corner: shifted inside, still square
    (Box(0, 0, 90, 90), (60, 100), 0.2, 20),  # larger than the image: shrunk to fit
])
def test_crop_face_is_square_and_inside(box, shape, margin, size):
    rgb = np.arange(shape[0] * shape[1] * 3, dtype=np.uint32).reshape(*shape, 3).astype(np.uint8)
    out = cut_face(rgb, box, margin=margin, size=size)[0]
    assert out.shape == (size, size, 3)


def test_ctrl_c_keeps_written_frames_and_no_partial_file(tmp_path, clip, monkeypatch):
    import datatool.core.fsutil as fsutil

    real = fsutil.write_bytes_atomic
    calls = []

    def interrupted_on_fourth(path, data, *, overwrite=True):
        calls.append(path)
        if len(calls) == 4:  # Ctrl-C while the fourth frame is half written
            with fsutil.atomic_path(path, overwrite=overwrite) as tmp:
                tmp.write_bytes(data[: len(data) // 2])
                raise KeyboardInterrupt
        real(path, data, overwrite=overwrite)

    monkeypatch.setattr(fsutil, "write_bytes_atomic", interrupted_on_fourth)
    result = CliRunner().invoke(cli, ["capture", str(tmp_path / "ds"), "--source", str(clip), "--count", "10"])
    assert result.exit_code == 130
    assert "kept the 3 file(s)" in result.output
    files = sorted((tmp_path / "ds" / "images").iterdir())
    assert [p.name for p in files] == [p.name for p in calls[:3]]  # no temp file, no 4th frame


def test_capture_into_a_bare_image_folder_writes_beside_its_images(tmp_path):
    write_image(tmp_path / "bare" / "old.jpg")
    assert target_images_dir(tmp_path / "bare") == tmp_path / "bare"
    assert target_images_dir(tmp_path / "new") == tmp_path / "new" / "images"


# ---------------------------------------------------------------- the session stamp

def test_stamp_round_trip_keeps_pixels(tmp_path):
    from datatool.core.images import decode_rgb, encode_jpeg

    rgb = np.random.default_rng(1).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    plain = encode_jpeg(rgb)
    stamped = stamp_jpeg(plain, {"session": "s1", "time": 1.5})
    (tmp_path / "x.jpg").write_bytes(stamped)
    assert capture_info(tmp_path / "x.jpg") == {"session": "s1", "time": 1.5}
    assert np.array_equal(decode_rgb(stamped), decode_rgb(plain))


@pytest.mark.parametrize("content", [
    "plain-jpeg",  # a JPEG capture did not write
    "png",  # not a JPEG
    "truncated",  # a JPEG cut inside its headers
    "missing",  # no file at all
])
def test_capture_info_is_none_when_not_stamped(tmp_path, content):
    from datatool.core.images import encode_jpeg

    path = tmp_path / "x.jpg"
    if content == "plain-jpeg":
        path.write_bytes(encode_jpeg(np.zeros((8, 8, 3), np.uint8)))
    elif content == "png":
        write_image(path, fmt="PNG")
    elif content == "truncated":
        path.write_bytes(stamp_jpeg(encode_jpeg(np.zeros((8, 8, 3), np.uint8)), {"session": "s"})[:30])
    assert capture_info(path) is None and session_of(path) is None


@pytest.mark.parametrize("text,expected", [
    ("640x480", (640, 480)),
    ("1280X720", (1280, 720)),  # capital X
    ("320*240", (320, 240)),  # star separator
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["640", "0x480", "axb", "640x480x3"])
def test_parse_size_rejects(text):
    with pytest.raises(DatatoolError, match="--size"):
        parse_size(text)


# ---------------------------------------------------------------- the Qt preview

@pytest.mark.parametrize("env,platform,expected", [
    ({"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":0"}, "linux", False),  # offscreen is no display
    ({"DISPLAY": ":0"}, "linux", True),  # X11
    ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", True),  # Wayland
    ({}, "linux", False),  # a headless server
    ({}, "win32", True),  # Windows always has a desktop
    ({"QT_QPA_PLATFORM": "minimal"}, "darwin", False),
])
def test_display_available(env, platform, expected):
    from datatool.core.qtview import display_available

    assert display_available(env, platform) is expected


def test_preview_window_shows_frames_offscreen():
    from datatool.core.qtview import PreviewWindow

    with PreviewWindow("test", max_side=100) as win:
        assert win.poll()
        win.show(np.zeros((300, 200, 3), np.uint8), big="3", corner="0/10")
        assert win.shown_size == (67, 100)  # shrunk to max_side, aspect kept
        win.close()
        assert not win.poll() and win.stopped


def test_open_preview_headless_is_off_not_a_crash():
    from datatool.core.qtview import open_preview

    window, reason = open_preview(True)  # QT_QPA_PLATFORM=offscreen in tests
    assert window is None and "no display" in reason


def test_capture_with_a_preview_window(tmp_path, clip, monkeypatch):
    # pretend a display exists: the real Qt window runs on the offscreen platform
    import datatool.core.qtview as qtview

    monkeypatch.setattr(qtview, "display_available", lambda *a, **k: True)
    result = capture(tmp_path / "ds", source=str(clip), count=3, preview=True, progress=False)
    assert len(result.written) == 3 and result.preview_note == ""
