"""The schema, one module per domain, every table on `base.Base`. Postgres in production, SQLite
for the embedded default; every change is an Alembic revision under migrations/versions."""

# Every table module loads with the package, so whichever table a caller imports, Base.metadata
# holds the whole schema: foreign keys name tables of other modules, and Alembic
# (migrations/env.py) compares the migrations against all of it.
from packsight.models.tables import (  # noqa: F401
    base,
    clips,
    jobs,
    labels,
    training_runs,
    versions,
    work,
)
