"""A training run's objects in artifact storage: checkpoints, the adapter, results.json.

artifact://<bucket>/training-runs/<run id>/
    checkpoints/step-000050/...   one folder per checkpoint (adapter, optimizer, RNG state)
    checkpoints/latest.json       {"step": 50}, written after its folder is complete
    adapter/...                   the final adapter with training.json
    results.json
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from packsight.storage.artifacts import artifact_uri, download_folder, upload_folder
from packsight.storage.base import ObjectNotFoundError, Storage
from packsight.training.retraining import LabelledVideo


class RunArtifacts:
    def __init__(self, storage: Storage, bucket: str, run_id: str) -> None:
        self.storage, self.bucket = storage, bucket
        self.prefix = f"training-runs/{run_id}"
        self.uri = artifact_uri(bucket, self.prefix)

    def put_json(self, name: str, value: object) -> None:
        data = (json.dumps(value, indent=2) + "\n").encode()
        self.storage.put_bytes(self.bucket, f"{self.prefix}/{name}", data)

    def put_videos(self, videos: list[LabelledVideo]) -> None:
        self.put_json("videos.json", [asdict(v) for v in videos])

    def get_videos(self) -> list[LabelledVideo] | None:
        """The labelled videos frozen with the run's first delivery; None before that."""
        try:
            stored = json.loads(self.storage.get_bytes(self.bucket, f"{self.prefix}/videos.json"))
        except ObjectNotFoundError:
            return None
        return [
            LabelledVideo(
                v["bucket"],
                v["key"],
                v["subject"],
                [tuple(seg) for seg in v["segments"]],
                v.get("session"),
            )
            for v in stored
        ]

    def put_jsonl(self, name: str, rows: list[dict[str, object]]) -> None:
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        self.storage.put_bytes(self.bucket, f"{self.prefix}/{name}", data)

    def publish_adapter(self, folder: Path) -> str:
        """Upload the final adapter; return the artifact:// URI model versions refer to."""
        upload_folder(self.storage, folder, self.bucket, f"{self.prefix}/adapter")
        return artifact_uri(self.bucket, f"{self.prefix}/adapter")

    def save_checkpoint(self, checkpoint: Path, step: int) -> None:
        # Each checkpoint under its own prefix, then the pointer: a crash mid-upload leaves the
        # pointer on the previous complete one.
        upload_folder(self.storage, checkpoint, self.bucket, self._checkpoint(step))
        self.put_json("checkpoints/latest.json", {"step": step})

    def restore_checkpoint(self, checkpoint: Path) -> int | None:
        """Bring the latest stored checkpoint here unless the local one is as far along (another
        machine may have got further since this one stopped); return the step fetched, if any."""
        try:
            latest = json.loads(
                self.storage.get_bytes(self.bucket, f"{self.prefix}/checkpoints/latest.json")
            )
        except ObjectNotFoundError:
            return None
        local = checkpoint / "state.json"
        if local.exists() and json.loads(local.read_text())["step"] >= latest["step"]:
            return None
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(checkpoint, ignore_errors=True)
        download_folder(self.storage, self.bucket, self._checkpoint(latest["step"]), checkpoint)
        return int(latest["step"])

    def discard_checkpoints(self) -> int:
        """Delete the run's stored checkpoints (once the adapter is published they only take
        space); return how many objects went."""
        stored = self.storage.list_objects(self.bucket, f"{self.prefix}/checkpoints/")
        keys = [info.key for info in stored]
        self.storage.delete(self.bucket, keys)
        return len(keys)

    def _checkpoint(self, step: int) -> str:
        return f"{self.prefix}/checkpoints/step-{step:06d}"
