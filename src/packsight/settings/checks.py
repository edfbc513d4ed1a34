"""The checks behind the settings' validators: plain functions of one value, so each rule
reads on its own and the Settings class stays a list of fields."""

from __future__ import annotations

from packsight.secret_rules import check_secret

CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def crontab_fields(expression: str) -> dict[str, str]:
    """A 5-field crontab line as keyword arguments of celery.schedules.crontab (whose positional
    order differs from cron's)."""
    fields = expression.split()
    if len(fields) != len(CRONTAB_FIELDS):
        raise ValueError(f"expected 5 fields, got {len(fields)}")
    return dict(zip(CRONTAB_FIELDS, fields, strict=True))


def training_schedule(value: str) -> str:
    """The schedule, normalised; checked with the parser beat will use. Empty disables it."""
    if not value.strip():
        return ""
    from celery.schedules import crontab

    try:
        crontab(**crontab_fields(value))
    except ValueError as exc:
        raise ValueError(
            f"training_schedule {value!r} is not a 5-field crontab "
            f"('minute hour day-of-month month day-of-week'), or empty to disable: {exc}"
        ) from exc
    return " ".join(value.split())


def header_token(token: str) -> None:
    if token and not (token.isascii() and token.isprintable() and " " not in token):
        raise ValueError(
            "PACKSIGHT_API_TOKEN must be printable ASCII without spaces (it is sent in an "
            "HTTP header)"
        )


def flower_basic_auth(pairs: str) -> None:
    for pair in pairs.split(","):
        user, colon, password = pair.partition(":")
        if not user.strip() or not colon:
            raise ValueError(
                "PACKSIGHT_FLOWER_BASIC_AUTH must be user:password (several separated by ',')"
            )
        check_secret(f"the password of {user!r} in PACKSIGHT_FLOWER_BASIC_AUTH", password)


def database_url(value: str, separate_password: str | None) -> str:
    """The URL, with a separately set password quoted into it; checked with the parser the
    engine will use."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(
            "PACKSIGHT_DATABASE_URL is not a database URL "
            "(dialect+driver://user:password@host:port/database)"
        ) from exc
    if separate_password is not None:
        if url.password is not None:
            raise ValueError(
                "PACKSIGHT_DATABASE_PASSWORD is set and PACKSIGHT_DATABASE_URL holds a "
                "password too: keep one of them"
            )
        check_secret("PACKSIGHT_DATABASE_PASSWORD", separate_password)
        # Quoted into the URL (`@` as %40, `/` as %2F, ...); make_url gives it back as is.
        return url.set(password=separate_password).render_as_string(hide_password=False)
    # No password is fine: trust or peer authentication, or a SQLite file.
    if url.password is not None:
        check_secret("the password in PACKSIGHT_DATABASE_URL", url.password)
    return value
