"""Celery side of packsight: the app, its signals and the per-stage tasks (kept thin)."""
