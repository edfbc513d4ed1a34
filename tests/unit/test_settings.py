"""Settings refuse placeholder secrets and out-of-range numbers, naming the variable and never
echoing the value."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from packsight.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PACKSIGHT_"):
            monkeypatch.delenv(name)


def settings(**env: str) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[arg-type, call-arg]


def assert_not_echoed(error: ValidationError, value: str) -> None:
    assert "input_value" not in str(error)
    if len(value) > 8:  # shorter ones ("token") also occur in the messages' own words
        assert value not in str(error)


PLACEHOLDERS = [
    "REPLACE-with-a-long-random-token",
    "replace_me_with_something_long",
    "xxchangemexxxxxxxxxxxxxx",
    "please-CHANGE-ME-before-use",
    "an-example-secret-of-some-length",
    "placeholder-placeholder",
    "your-secret-goes-here-ok",
    "password",
    "Secret",
    "minioadmin",
    "admin",
    "guest",
    "token",
    "short-but-real",  # 14 characters
]


@pytest.mark.parametrize("value", PLACEHOLDERS)
@pytest.mark.parametrize(
    ("field", "variable"),
    [("api_token", "PACKSIGHT_API_TOKEN"), ("s3_secret_key", "PACKSIGHT_S3_SECRET_KEY")],
)
def test_placeholder_secrets_are_refused(field: str, variable: str, value: str) -> None:
    with pytest.raises(ValidationError, match=variable) as refused:
        settings(**{field: value})
    assert_not_echoed(refused.value, value)


@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_placeholder_database_passwords_are_refused(value: str) -> None:
    url = f"postgresql+psycopg2://packsight:{value}@db:5432/packsight"
    with pytest.raises(ValidationError, match="password in PACKSIGHT_DATABASE_URL") as refused:
        settings(database_url=url)
    assert_not_echoed(refused.value, value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://postgres@127.0.0.1:5432/packsight_test",  # trust auth (tests)
        "sqlite:////tmp/packsight.db",
        f"postgresql+psycopg2://packsight:{secrets.token_urlsafe(24)}@db:5432/packsight",
    ],
    ids=["trust-auth", "sqlite", "real-password"],  # stable: test processes must agree on ids
)
def test_database_urls_without_or_with_a_real_password_pass(url: str) -> None:
    assert settings(database_url=url).database_url == url


def test_a_malformed_database_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="PACKSIGHT_DATABASE_URL is not a database URL"):
        settings(database_url="not a url")


URL_WITHOUT_PASSWORD = "postgresql+psycopg2://packsight@postgres:5432/packsight"


def test_a_separate_database_password_may_hold_any_character(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As compose passes it: PACKSIGHT_DATABASE_URL without a password, the password apart.
    from sqlalchemy.engine import make_url

    password = f"p@ss:w/rd#%{secrets.token_urlsafe(12)}%40?&="
    monkeypatch.setenv("PACKSIGHT_DATABASE_URL", URL_WITHOUT_PASSWORD)
    monkeypatch.setenv("PACKSIGHT_DATABASE_PASSWORD", password)
    resolved = Settings(_env_file=None).resolved_database_url  # type: ignore[call-arg]
    url = make_url(resolved)
    assert url.password == password
    assert (url.drivername, url.username, url.host, url.port, url.database) == (
        "postgresql+psycopg2", "packsight", "postgres", 5432, "packsight",
    )  # fmt: skip
    assert password not in resolved  # quoted into the URL, not pasted


def test_a_placeholder_database_password_is_refused_by_name() -> None:
    value = "REPLACE-with-a-db-password"
    with pytest.raises(ValidationError, match="PACKSIGHT_DATABASE_PASSWORD is not a usable") as e:
        settings(database_url=URL_WITHOUT_PASSWORD, database_password=value)
    assert_not_echoed(e.value, value)


def test_a_database_password_needs_a_url_without_one() -> None:
    password = secrets.token_urlsafe(24)
    with pytest.raises(ValidationError, match="keep one of them"):
        settings(
            database_url=f"postgresql+psycopg2://packsight:{password}@db/packsight",
            database_password=password,
        )
    with pytest.raises(ValidationError, match="PACKSIGHT_DATABASE_URL is not"):
        settings(database_password=password)
    assert settings(database_url=URL_WITHOUT_PASSWORD, database_password="").database_url == (
        URL_WITHOUT_PASSWORD
    )


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("admin:REPLACE-with-a-flower-password", "starts with REPLACE"),
        ("admin:admin", "well-known default"),
        ("admin:s3cr3t-pw", "shorter than 16"),
        (f"ops:{secrets.token_urlsafe(24)},guest:guest", "of 'guest'"),
        ("no-colon-at-all-but-long-enough", "user:password"),
        (f":{secrets.token_urlsafe(24)}", "user:password"),
    ],
    ids=["replace", "default", "short", "a-second-user-default", "no-colon", "no-user"],
)
def test_flower_basic_auth_needs_real_passwords(value: str, needle: str) -> None:
    with pytest.raises(ValidationError, match="PACKSIGHT_FLOWER_BASIC_AUTH") as refused:
        settings(flower_basic_auth=value)
    assert needle in str(refused.value)


def test_the_test_harness_secrets_pass() -> None:
    # What tests/services.py and tests/app_fixtures.py generate.
    for _ in range(50):
        loaded = settings(
            api_token=secrets.token_urlsafe(24),
            s3_secret_key=secrets.token_urlsafe(30),
            flower_basic_auth=f"ops:{secrets.token_urlsafe(24)}",
        )
        assert loaded.api_token is not None


def test_variables_are_named_when_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACKSIGHT_API_TOKEN", "changeme")
    with pytest.raises(ValidationError, match="PACKSIGHT_API_TOKEN is not a usable secret"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_api_token_must_fit_an_http_header() -> None:
    with pytest.raises(ValidationError, match="printable ASCII"):
        settings(api_token="tökén-" + secrets.token_urlsafe(24))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_attempts", "0"),
        ("visibility_timeout_s", "59"),
        ("gpu_batch_size", "0"),
        ("gpu_task_batches", "0"),
        ("decode_threads", "-1"),
        ("decode_device", "gpu"),
        ("frames_per_clip", "0"),
        ("clip_seconds", "0"),
        ("frame_max_side", "27"),
        ("motion_width", "0"),
        ("max_new_tokens", "0"),
        ("test_clips", "-1"),
        ("promotion_tolerance", "-0.1"),
        ("max_request_bytes", "1023"),
        ("training_stale_after_s", "30"),
    ],
)
def test_numbers_out_of_range_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValidationError, match=name):
        settings(**{name: value})


def test_a_gpu_delivery_ends_well_before_it_would_be_taken_for_hung() -> None:
    with pytest.raises(ValidationError, match="gpu_delivery_s"):
        settings(max_unit_s="100", gpu_delivery_s="60")
    assert settings(max_unit_s="120", gpu_delivery_s="60").gpu_delivery_s == 60


def test_the_request_limit_defaults_to_8_mib() -> None:
    assert settings().max_request_bytes == 8 * 1024 * 1024
    assert settings(max_request_bytes="1024").max_request_bytes == 1024


def test_empty_variables_mean_unset() -> None:
    # What compose passes for a variable left empty: the embedded default, not a broker "".
    loaded = settings(broker_url="", s3_endpoint_url="", database_url="")
    assert loaded.broker_url is None and loaded.embedded
    assert loaded.s3_endpoint_url is None and loaded.database_url is None


def test_the_readme_lists_every_setting() -> None:
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| (`[A-Z0-9_]+`(?:, `[A-Z0-9_]+`)*) \|", section, re.M))
    names = {name.strip("`") for row in listed for name in row.split(", ")}
    assert {field.upper() for field in Settings.model_fields} - names == set()


def test_the_data_folder_is_per_user_whatever_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert Settings().data_dir == tmp_path / "xdg" / "packsight"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings().data_dir == tmp_path / "home" / ".local" / "share" / "packsight"
    monkeypatch.setenv("PACKSIGHT_DATA_DIR", "/srv/packsight")
    assert Settings().data_dir == Path("/srv/packsight")
