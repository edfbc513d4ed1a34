"""Persistence: SQLAlchemy 2 tables, the engine/session helpers and the service functions."""
