"""A video's subject and session from its key, and the clip ids that follow: the seed's form
where the layout shows both, the whole key path otherwise, so two folders' videos never share
ids by accident."""

from __future__ import annotations

import pytest

from packsight.video.identity import VideoIdentity, clip_id, clip_prefix, identity_from_key


@pytest.mark.parametrize(
    ("key", "subject", "session"),
    [
        ("U0108/kinect/S0500.mp4", "U0108", "S0500"),  # OpenPack's own layout
        ("site/U0201/rgb/S0100.mkv", "U0201", "S0100"),  # nested deeper
        ("U0101/video/U0101_S0100.mp4", "U0101", "S0100"),
        ("archive/U0108_S0500.mp4", "U0108", "S0500"),  # flat export named after both
        ("U0101/U0108_S0500.mp4", "U0108", "S0500"),  # the file names its own subject
        ("cam-2/S0007.mp4", None, "S0007"),
        ("U0105/notes/2026-11-01.mp4", "U0105", None),
        ("station-7/2026-11/clip.mp4", None, None),
        ("U01/S0500x.mp4", None, None),  # near misses are not ids
    ],
)
def test_identity_from_the_layout(key: str, subject: str | None, session: str | None) -> None:
    assert identity_from_key(key) == VideoIdentity(subject, session)


def test_clip_ids_take_the_seeds_form_or_the_whole_path() -> None:
    openpack = "U0108/kinect/S0500.mp4"
    assert clip_id(clip_prefix(openpack, identity_from_key(openpack)), 35 * 25, 25) == (
        "U0108_S0500_t0035"
    )
    # Same session name under two subjects: distinct ids (the seed's stem-only ids collided).
    assert clip_prefix("U0201/kinect/S0100.mp4", identity_from_key("U0201/kinect/S0100.mp4")) != (
        clip_prefix("U0202/kinect/S0100.mp4", identity_from_key("U0202/kinect/S0100.mp4"))
    )
    plain = "a/b/c.mp4"
    assert clip_id(clip_prefix(plain, identity_from_key(plain)), 300, 29.97) == "a_b_c_t0010"
    # An import can complete what the key lacks.
    partial = identity_from_key("cam-2/S0007.mp4").merged(VideoIdentity("U0103", "S9999"))
    assert partial == VideoIdentity("U0103", "S0007")
    assert clip_prefix("cam-2/S0007.mp4", partial) == "U0103_S0007"
