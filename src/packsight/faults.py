"""Failures of infrastructure that pass: the database, the broker or object storage could not be
reached. Waiting and retrying is the cure, and no video or clip is to blame for them."""


class TransientError(Exception):
    """A dependency is unavailable for now; retry later rather than record a failure."""
