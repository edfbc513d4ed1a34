"""Who and what a video is: its subject (the worker, "U0108") and session ("S0500") when its key
shows them, and the clip ids derived from that.

OpenPack lays an archive out one folder per subject with session-named files
(`U0108/kinect/S0500.mp4`); exports often name the file after both (`U0108_S0500.mp4`). Clip ids
then take the seed's form `<subject>_<session>_t<start second>` ("U0108_S0500_t0035"); a key that
shows neither gets ids from its whole path, so two videos of one bucket never share ids by
accident (the database refuses a collision all the same).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

SUBJECT = re.compile(r"U\d{4}")
_STEM = re.compile(r"(?:(?P<subject>U\d{4})[_-])?(?:.*[_-])?(?P<session>S\d{4})")


@dataclass(frozen=True)
class VideoIdentity:
    subject: str | None
    session: str | None

    def merged(self, other: VideoIdentity) -> VideoIdentity:
        """This identity, with what it lacks taken from `other` (e.g. the labels' import)."""
        return VideoIdentity(self.subject or other.subject, self.session or other.session)


def identity_from_key(key: str) -> VideoIdentity:
    """Subject and session as the key's layout shows them: a stem that is or ends with
    `S\\d{4}`, and the subject its stem names (`U0108_S0500`) or else the nearest `U\\d{4}`
    folder: the file's own name is the more specific."""
    path = PurePosixPath(key)
    folders = [part for part in path.parts[:-1] if SUBJECT.fullmatch(part)]
    match = _STEM.fullmatch(path.stem)
    named = match["subject"] if match else None
    subject = named or (folders[-1] if folders else None)
    return VideoIdentity(subject, match["session"] if match else None)


def clip_prefix(key: str, identity: VideoIdentity) -> str:
    """The part of a video's clip ids before `_t<second>`."""
    if identity.subject and identity.session:
        return f"{identity.subject}_{identity.session}"
    return str(PurePosixPath(key).with_suffix("")).replace("/", "_")


def clip_id(prefix: str, start_frame: int, fps: float) -> str:
    """'U0108_S0500' starting at frame 875 of a 25 fps video -> 'U0108_S0500_t0035'."""
    # The epsilon keeps 874.9999.../25 style float error from flooring to the previous second.
    start_second = math.floor(start_frame / fps + 1e-9)
    return f"{prefix}_t{start_second:04d}"
