"""GET /metrics: Prometheus' text format, without a token (a scraper has none). Counts, timings
and states only: nothing in it names a secret, a bucket or a key."""

from __future__ import annotations

from fastapi import APIRouter, Response

from packsight.api.deps import SettingsDep
from packsight.pipeline.metrics_serving import exposition

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(settings: SettingsDep) -> Response:
    body, content_type = exposition(settings.resolved_database_url)
    return Response(content=body, media_type=content_type)
