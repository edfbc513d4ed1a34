"""HTTP API: validation, DB queries and queueing; no pipeline logic lives here."""
