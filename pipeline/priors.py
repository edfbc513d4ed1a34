"""The transition prior of a model version, read or learned on demand.

A training run stores the prior learned from its training subjects' labels with its candidate
version (`settings["prior"]`), and that version's timelines are smoothed with it. Here the same
prior can be shown for any version, or learned now from the verified labels of a bucket (every
subject, the same windows and truths as training) and stored into a version, whose timelines
then use it. Learning reads each video's frame rate and frame count from its `videos` row when
it was sampled, else from the video's header (the file is fetched, one at a time).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from packsight.labels.prior import TransitionPrior, learn_prior
from packsight.labels.taxonomy import Taxonomy, load_taxonomy
from packsight.models.evaluations import UnknownModelVersionError
from packsight.models.tables.clips import Video
from packsight.models.tables.training_runs import TrainingRun
from packsight.models.tables.versions import ModelVersion
from packsight.models.training_runs import labelled_videos
from packsight.pipeline.context import Context
from packsight.pipeline.submission import configured_version
from packsight.settings import Settings
from packsight.storage.base import StorageError
from packsight.training.examples import truths_of_windows
from packsight.training.retraining import LabelledVideo
from packsight.training.windows import procedure_successor
from packsight.video.decode import VideoDecodeError, probe_video

Recorded = tuple[int, float] | None  # a video's (frame count, fps), when it was sampled


class NoPriorError(LookupError):
    """The model version has no prior (the base model, or one trained before priors)."""


class NoVerifiedLabelsError(LookupError):
    """Nothing to learn a prior from: no video whose labels are all verified."""


@dataclass(frozen=True)
class VersionPrior:
    """A model version's prior and, in one line, where it came from."""

    version_id: int
    version: str
    serving: bool
    prior: TransitionPrior
    source: str


@dataclass(frozen=True)
class LearnedPrior:
    prior: TransitionPrior
    clip_seconds: float  # the windows it was learned on
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (bucket/key, why)
    stored: VersionPrior | None = None  # the version it was stored into


def find_version(session: Session, settings: Settings, name: str | None) -> ModelVersion:
    """The version called `name` (or with that id); by default the one new jobs label with:
    PACKSIGHT_ADAPTER's when set, else the one serving the configured model, else its base."""
    if name is not None:
        found = session.scalar(select(ModelVersion).where(ModelVersion.name == name))
        if found is None and name.isdigit():
            found = session.get(ModelVersion, int(name))
        if found is None:
            raise UnknownModelVersionError(
                f"no model version {name!r} (`packsight models` lists them)"
            )
        return found
    found = configured_version(session, settings)
    if found is None:
        raise UnknownModelVersionError(
            f"no model version of {settings.model} ({settings.taxonomy}) yet: name one with "
            "--version (`packsight models` lists them)"
        )
    return found


def stored_prior(ctx: Context, name: str | None) -> VersionPrior:
    """The prior stored with the version `name` (default: find_version's); NoPriorError if it
    has none."""

    def read(session: Session) -> VersionPrior:
        version = find_version(session, ctx.settings, name)
        if not (version.settings or {}).get("prior"):
            raise NoPriorError(
                f"model version {version.name!r} has no prior (a base model has none; "
                "`packsight prior learn --version` stores one)"
            )
        return _shown(session, version)

    return ctx.transaction(read)


def learn_prior_now(
    ctx: Context,
    *,
    bucket: str,
    prefix: str = "",
    taxonomy: str | None = None,
    version: str | None = None,
) -> LearnedPrior:
    """The prior of the verified labels of `bucket` (keys under `prefix`), in `taxonomy`
    (default: the version's, else the configured one), on the windows the version labels;
    stored into `version` when one is named. NoVerifiedLabelsError if there is nothing to learn
    from."""
    settings = ctx.settings

    def gather(session: Session) -> tuple[Taxonomy, float, list[tuple[LabelledVideo, Recorded]]]:
        clip_seconds = settings.frame_settings.clip_seconds
        name = taxonomy
        if version is not None:
            target = find_version(session, settings, version)
            if taxonomy is not None and taxonomy != target.taxonomy:
                raise ValueError(
                    f"model version {target.name!r} labels in taxonomy {target.taxonomy!r}, "
                    f"not {taxonomy!r}"
                )
            name = target.taxonomy
            frames = (target.settings or {}).get("frames")
            clip_seconds = frames["clip_seconds"] if frames else clip_seconds
        chosen = load_taxonomy(name or settings.taxonomy)
        videos = [
            v
            for v in labelled_videos(session, taxonomy=chosen.name, bucket=bucket)
            if v.key.startswith(prefix)
        ]
        return chosen, clip_seconds, [(v, _recorded(session, v)) for v in videos]

    chosen, clip_seconds, videos = ctx.transaction(gather)
    procedure_next = procedure_successor(chosen) if chosen.procedure else None
    truths, seconds, skipped = [], [], []
    with tempfile.TemporaryDirectory(prefix="packsight-prior-") as folder:
        for video, recorded in videos:
            where = f"{video.bucket}/{video.key}"
            try:
                frame_count, fps = recorded or _probe(ctx, video, Path(folder))
                found, lengths = truths_of_windows(
                    video.segments,
                    frame_count=frame_count,
                    fps=fps,
                    taxonomy=chosen,
                    clip_seconds=clip_seconds,
                    procedure_next=procedure_next,
                )
            except (StorageError, VideoDecodeError, ValueError, OSError) as exc:
                skipped.append((where, f"{type(exc).__name__}: {exc}"))
                continue
            truths.append(found)
            seconds.append(lengths)
    if not truths:
        under = f" under {prefix!r}" if prefix else ""
        unreadable = f" ({len(skipped)} unreadable)" if skipped else ""
        raise NoVerifiedLabelsError(
            f"no verified {chosen.name} labels in bucket {bucket!r}{under}{unreadable}: a video "
            "counts when all its labels are verified and its subject is known"
        )
    prior = learn_prior(truths, chosen, segment_seconds=seconds)
    stored = None
    if version is not None:
        source = {
            "learned": datetime.now(UTC).isoformat(timespec="seconds"),
            "bucket": bucket,
            "prefix": prefix,
            "clip_seconds": clip_seconds,
        }
        stored = ctx.transaction(lambda s: _store(s, settings, version, prior, source))
    return LearnedPrior(prior, clip_seconds, skipped, stored)


def _recorded(session: Session, video: LabelledVideo) -> Recorded:
    """(frame count, fps) of the video's latest recording that was sampled, if any."""
    row = session.execute(
        select(Video.frame_count, Video.fps)
        .where(Video.bucket == video.bucket, Video.key == video.key)
        .order_by(Video.created_at.desc(), Video.id.desc())
        .limit(1)
    ).first()
    return (row.frame_count, row.fps) if row else None


def _probe(ctx: Context, video: LabelledVideo, folder: Path) -> tuple[int, float]:
    path = folder / "video"
    try:
        ctx.storage.download(video.bucket, video.key, path)
        info = probe_video(path)
    finally:
        path.unlink(missing_ok=True)
    return info.frame_count, info.fps


def _store(
    session: Session,
    settings: Settings,
    name: str,
    prior: TransitionPrior,
    source: dict[str, Any],
) -> VersionPrior:
    version = find_version(session, settings, name)
    # A new dict: the JSON column sees a change only when it is assigned.
    version.settings = {
        **(version.settings or {}),
        "prior": prior.to_json(),
        "prior_source": source,
    }
    session.flush()
    return _shown(session, version)


def _shown(session: Session, version: ModelVersion) -> VersionPrior:
    stored = version.settings or {}
    return VersionPrior(
        version_id=version.id,
        version=version.name,
        serving=version.is_serving,
        prior=TransitionPrior.from_json(stored["prior"]),
        source=_source(session, version, stored.get("prior_source")),
    )


def _source(session: Session, version: ModelVersion, learned: dict[str, Any] | None) -> str:
    if learned:
        under = f" under {learned['prefix']!r}" if learned.get("prefix") else ""
        return (
            f"learned on demand at {learned['learned']} from the verified labels of bucket "
            f"{learned['bucket']!r}{under} ({learned['clip_seconds']:g} s windows)"
        )
    run = session.scalar(
        select(TrainingRun)
        .where(TrainingRun.candidate_version_id == version.id)
        .order_by(TrainingRun.created_at.desc())
        .limit(1)
    )
    if run is None:
        return "stored with the version"
    subjects = ", ".join((run.params.get("splits") or {}).get("train", ())) or "?"
    return f"learned by training run {run.id} from the labels of subjects {subjects}"
