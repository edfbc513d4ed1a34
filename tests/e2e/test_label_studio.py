"""The review loop through a real Label Studio: the clips most worth a check go out as tasks,
a reviewer's correction comes back through Label Studio's own export, and packsight stores it
as a verified label (the next training run's truth) and stops asking about that clip."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import httpx
import pytest
from app_fixtures import start_api
from cli_runs import run
from harness.label_studio import LabelStudio

from packsight.labels.taxonomy import load_taxonomy

pytestmark = pytest.mark.e2e


def test_a_correction_made_in_label_studio_becomes_a_verified_label(
    tmp_path: Path, tiny_model_dir: Path, own_data_dir: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKSIGHT_")}
    env["PACKSIGHT_MODEL"] = str(tiny_model_dir)
    assert run(["synth", "archive", "--videos", "2", "--seed", "11"], tmp_path, env).returncode == 0
    labelled = run(["label", "archive"], tmp_path, env)
    assert labelled.returncode == 0, labelled.stdout + labelled.stderr
    clips = len(run(["results", "--format", "jsonl"], tmp_path, env).stdout.splitlines())

    # The queue: every labelled clip ranked, the most doubtful first, each with its reasons.
    everything = run(["review", "export", "archive", "--all", "--format", "json"], tmp_path, env)
    assert everything.returncode == 0, everything.stderr
    ranked = json.loads(everything.stdout)
    assert len(ranked) == clips and f"{clips} labelled clips in 'archive'" in everything.stderr
    scores = [clip["score"] for clip in ranked]
    assert scores == sorted(scores, reverse=True) and scores[0] > scores[-1]
    assert all(clip["reasons"][0].startswith("confidence ") for clip in ranked)
    assert all(clip["margin"] is not None for clip in ranked)  # the probabilities were kept

    # The API ranks the same way.
    token = secrets.token_urlsafe(24)
    api, url = start_api(env | {"PACKSIGHT_API_TOKEN": token}, tmp_path / "api.log")
    auth = {"Authorization": f"Bearer {token}"}
    try:
        queue = httpx.get(
            f"{url}/v1/review", params={"bucket": "archive", "limit": 3}, headers=auth
        ).json()
        assert [c["clip_id"] for c in queue["clips"]] == [c["clip_id"] for c in ranked[:3]]
        missing = httpx.get(f"{url}/v1/review", headers=auth)
        assert missing.status_code == 422 and "bucket or job_id" in missing.text

        config = run(["review", "label-studio-config"], tmp_path, env).stdout
        args = ["review", "export", "archive", "--limit", "3", "--format", "label-studio"]
        exported = run([*args, "--out", "tasks.json"], tmp_path, env)
        assert exported.returncode == 0, exported.stderr
        tasks = json.loads((tmp_path / "tasks.json").read_text())
        assert [t["data"]["clip_id"] for t in tasks] == [c["clip_id"] for c in ranked[:3]]
        assert all(t["data"]["video"].startswith("file://") for t in tasks)
        served = httpx.get(
            f"{url}/v1/review",
            params={"bucket": "archive", "limit": 3, "format": "label-studio"},
            headers=auth,
        )
        assert served.status_code == 200 and served.json() == tasks

        first = ranked[0]
        predicted = first["dominant_operation"]
        corrected = next(op for op in load_taxonomy("assignment").operations if op != predicted)
        with LabelStudio() as studio:
            project = studio.call(
                "POST", "/api/projects", {"title": "packsight review", "label_config": config}
            )
            studio.call("POST", f"/api/projects/{project['id']}/import", tasks)
            shown = studio.call("GET", f"/api/tasks?project={project['id']}")["tasks"]
            task = next(t for t in shown if t["data"]["clip_id"] == first["clip_id"])
            assert task["total_predictions"] == 1
            # The reviewer marks the whole clip as another operation (Label Studio's frames
            # count from 1 and include both ends).
            window = {"start": first["start_frame"] + 1, "end": first["end_frame"] + 1}
            region = {
                "id": "fix",
                "from_name": "operation",
                "to_name": "video",
                "type": "timelinelabels",
                "value": {"ranges": [window], "timelinelabels": [corrected]},
            }
            studio.call("POST", f"/api/tasks/{task['id']}/annotations", {"result": [region]})
            export = studio.call("GET", f"/api/projects/{project['id']}/export?exportType=JSON")
        (tmp_path / "export.json").write_text(json.dumps(export))

        for _ in range(2):  # importing the same export again changes nothing
            imported = run(
                ["labels", "import", "--format", "label-studio", "export.json"], tmp_path, env
            )
            assert imported.returncode == 0, imported.stdout + imported.stderr
            assert f"archive/{first['video_key']}\t1 reviewed spans" in imported.stdout
            labels = httpx.get(
                f"{url}/v1/labels",
                params={"bucket": "archive", "video_key": first["video_key"]},
                headers=auth,
            ).json()["labels"]
            assert [
                (label["operation"], label["start_frame"], label["end_frame"], label["verified"])
                for label in labels
            ] == [(corrected, first["start_frame"], first["end_frame"] + 1, True)]
    finally:
        api.stop()

    # The reviewed clip has left the queue.
    again = run(["review", "export", "archive", "--all", "--format", "json"], tmp_path, env)
    assert first["clip_id"] not in [c["clip_id"] for c in json.loads(again.stdout)]
    assert "1 already labelled by people" in again.stderr

    # An export packsight cannot read is one line, not a traceback.
    (tmp_path / "bad.json").write_text('{"tasks": []}')
    bad = run(["labels", "import", "--format", "label-studio", "bad.json"], tmp_path, env)
    assert bad.returncode == 1 and "a list of tasks" in bad.stderr
    assert "Traceback" not in bad.stderr
