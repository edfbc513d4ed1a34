"""The review queue over the database: a video's serving answers smoothed with their version's
prior, another version's answers beside them, and people's labels, on Postgres."""

from __future__ import annotations

import uuid

from packsight.labels.metrics import ClipTruth
from packsight.labels.prior import learn_prior
from packsight.labels.taxonomy import load_taxonomy
from packsight.models.db import session_scope
from packsight.models.labels import add_correction
from packsight.models.tables.clips import Clip, Prediction, PredictionStatus, Video
from packsight.models.tables.versions import ModelVersion
from packsight.pipeline.review import review_queue

TAXONOMY = load_taxonomy("assignment")
OPS = TAXONOMY.operations
WINDOW = 125  # 5 s at 25 fps


def probabilities(**given: float) -> list[float]:
    """One probability per operation: those given, the rest shared evenly."""
    rest = (1.0 - sum(given.values())) / (len(OPS) - len(given))
    named = {name.replace("_", " "): p for name, p in given.items()}
    return [named.get(op, rest) for op in OPS]


def sticky_prior() -> dict:
    """Operations last many windows: an isolated odd window is implausible."""
    truths = [
        [ClipTruth(f"v{v}_{i}", op, 0, WINDOW - 1, op) for i, op in enumerate([op] * 30)]
        for v, op in enumerate(OPS[:4])
    ]
    return learn_prior(truths, TAXONOMY).to_json()


def test_the_queue_ranks_doubt_and_leaves_out_what_people_checked(pipeline_db: str) -> None:
    bucket = f"review-{uuid.uuid4().hex[:8]}"
    box, tape = OPS[0], OPS[2]
    answers = [  # serving version's (operation, probabilities) per window
        (box, probabilities(Box_Setup=0.9)),  # people labelled this one
        (box, probabilities(Box_Setup=0.9)),
        (tape, probabilities(Tape=0.5, Box_Setup=0.4)),  # the prior says Box Setup
        (box, probabilities(Box_Setup=0.85)),  # the other version says Tape
        (box, probabilities(Box_Setup=0.9)),
    ]
    with session_scope(pipeline_db) as session:
        serving = ModelVersion(
            name=f"{bucket}-tuned",
            base_model=f"{bucket}-tiny",
            adapter_uri="artifact://a",
            quantization="none",
            taxonomy=TAXONOMY.name,
            settings={"prior": sticky_prior()},
        )
        other = ModelVersion(
            name=f"{bucket}-base",
            base_model=f"{bucket}-tiny",
            quantization="none",
            taxonomy=TAXONOMY.name,
        )
        video = Video(
            bucket=bucket, key="cam/a.mp4", etag="e", size=1, fps=25.0,
            frame_count=WINDOW * len(answers), width=64, height=48,
            duration_s=len(answers) * 5.0,
        )  # fmt: skip
        session.add_all([other, video])
        session.flush()
        session.add(serving)  # newer: the version that labelled the video last
        session.flush()
        for i, (op, probs) in enumerate(answers):
            clip = Clip(
                video_id=video.id, clip_key=f"a_t{i:04d}", index=i, start_frame=i * WINDOW,
                end_frame=(i + 1) * WINDOW, frame_indices=[0], frames_uri="artifact://f",
            )  # fmt: skip
            session.add(clip)
            session.flush()
            other_op = tape if i == 3 else op
            for version, operation, p in ((other, other_op, None), (serving, op, probs)):
                session.add(
                    Prediction(
                        clip_id=clip.id, model_version_id=version.id,
                        status=PredictionStatus.OK, dominant_operation=operation,
                        start_frame=0, end_frame=WINDOW - 1, anticipated_next_operation=operation,
                        confidence=max(p) if p else 0.8, operation_probabilities=p,
                    )
                )  # fmt: skip
            session.flush()
        add_correction(
            session, bucket=bucket, video_key=video.key, operation=box,
            start_frame=0, end_frame=WINDOW, taxonomy=TAXONOMY.name,
        )  # fmt: skip

    with session_scope(pipeline_db) as session:
        queue = review_queue(session, bucket=bucket, limit=None)
        top = review_queue(session, bucket=bucket, limit=2)
        assert review_queue(session, bucket="no-such-bucket").clips == []

    assert (queue.considered, queue.reviewed) == (5, 1)
    ids = [c.clip.clip_id for c in queue.clips]
    assert "a_t0000" not in ids and len(ids) == 4
    assert ids[:2] == ["a_t0002", "a_t0003"] == [c.clip.clip_id for c in top.clips]
    doubtful, contradicted = queue.clips[0], queue.clips[1]
    assert doubtful.version == f"{bucket}-tuned"
    assert doubtful.smoothed is not None and doubtful.smoothed.dominant_operation == box
    assert f"the prior says {box}, the model {tape}" in doubtful.doubt.reasons
    assert f"{bucket}-base says {tape}" in contradicted.doubt.reasons
    assert all("says" not in r for c in queue.clips[2:] for r in c.doubt.reasons)
    # The segments travel with the clip, for Label Studio's prediction.
    assert all(s.operation == box for s in doubtful.segments)
    assert doubtful.to_json()["end_frame"] == 3 * WINDOW - 1

    # The serving version's answers are the ones reviewed, the other's stand beside them.
    with session_scope(pipeline_db) as session:
        session.get_one(ModelVersion, other.id).is_serving = True
    with session_scope(pipeline_db) as session:
        served = review_queue(session, bucket=bucket, limit=None)
    assert {c.version for c in served.clips} == {f"{bucket}-base"}
    assert any(f"{bucket}-tuned says {box}" in c.doubt.reasons for c in served.clips)
