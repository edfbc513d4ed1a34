"""What passes for a secret: no template value, no vendor default, nothing short. The settings
refuse anything else at start-up, naming the variable, never the value."""

from __future__ import annotations

# Secrets that are shipped defaults or templates rather than secrets: refused at start-up so a
# copied .env.example or a vendor default never guards a real deployment.
COMMON_DEFAULT_SECRETS = {"password", "secret", "token", "minioadmin", "admin", "guest"}
PLACEHOLDER_MARKERS = ("changeme", "change-me", "example", "placeholder", "your-")
MIN_SECRET_CHARS = 16


def placeholder_problem(secret: str) -> str | None:
    """Why `secret` looks like a placeholder or a guessable default, or None if it does not."""
    lowered = secret.lower()
    if lowered.startswith("replace"):
        return "it starts with REPLACE (a template value)"
    if marker := next((m for m in PLACEHOLDER_MARKERS if m in lowered), None):
        return f"it contains {marker!r} (a template value)"
    if lowered in COMMON_DEFAULT_SECRETS:
        return "it is a well-known default"
    if len(secret) < MIN_SECRET_CHARS:
        return f"it is shorter than {MIN_SECRET_CHARS} characters"
    return None


def check_secret(variable: str, secret: str) -> None:
    """Raise ValueError naming `variable` (never the value) when `secret` is not a real one."""
    if problem := placeholder_problem(secret):
        raise ValueError(
            f"{variable} is not a usable secret: {problem}; set a random value of at least "
            f"{MIN_SECRET_CHARS} characters (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
