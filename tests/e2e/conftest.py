"""The verified archive the retraining tests train on, uploaded to S3 and imported once for all
of their modules (test_retraining.py, then _resume and _schedule: pytest runs them in that order,
the first one before any other run could have promoted a version)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from app_fixtures import Stack
from harness import S3Endpoint
from retraining_archive import BUCKET

from packsight.video.synth import SyntheticVideo, write_synthetic_archive


@pytest.fixture(scope="session")
def verified_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SyntheticVideo]]:
    root = tmp_path_factory.mktemp("verified")
    # 9 sessions: subjects U0101..U0108, then U0101 again; U0108 is the test subject.
    return root, write_synthetic_archive(root, videos=9, seed=42)


@pytest.fixture(scope="session")
def verified(
    stack: Stack, s3: S3Endpoint, verified_archive: tuple[Path, list[SyntheticVideo]]
) -> list[SyntheticVideo]:
    """The archive in S3 with its annotations imported (verified) by the CLI."""
    root, videos = verified_archive
    client = s3.client()
    client.create_bucket(Bucket=BUCKET)
    for video in videos:
        client.upload_file(str(video.path), BUCKET, video.key)
    imported = subprocess.run(
        [str(Path(sys.executable).parent / "packsight"), "labels", "import", str(root),
         "--bucket", BUCKET],
        env=os.environ | stack.env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    return videos
