"""A real Label Studio server on loopback (from .venv-label-studio, which
scripts/install-label-studio.sh makes), its data in a temp dir copied from the migrated
template, an account and an API token of its own, and a small client for its REST API."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .budget import budget
from .process import LOOPBACK, START_TIMEOUT_S, ServiceError, free_port
from .service import _TempService

VENV = Path(__file__).resolve().parents[2] / ".venv-label-studio"
# Django's first start on a copied database still checks every migration and loads the
# frontend's assets: slower than the other servers.
START_S = max(START_TIMEOUT_S, budget(180.0))


class LabelStudioError(ServiceError):
    """Label Studio answered a request with an error."""


class LabelStudio(_TempService):
    def __init__(self) -> None:
        binary, template = VENV / "bin" / "label-studio", VENV / "template"
        if not binary.exists() or not template.is_dir():
            raise ServiceError(f"no Label Studio in {VENV}: run scripts/install-label-studio.sh")
        super().__init__("label-studio")
        data = self.root / "data"
        shutil.copytree(template, data)
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.token = secrets.token_hex(20)
        env = {
            "LABEL_STUDIO_USERNAME": "reviewer@example.com",
            "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(16),
            "LABEL_STUDIO_USER_TOKEN": self.token,
            # The token above is a legacy one, off by default in recent releases.
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LATEST_VERSION_CHECK": "false",  # no internet here: no call to PyPI
            "DJANGO_DB": "sqlite",
            "LABEL_STUDIO_BASE_DATA_DIR": str(data),  # never the home of whoever runs the tests
        }
        argv: list[str | os.PathLike[str]] = [binary, "start", "--no-browser", "--data-dir", data]
        argv += ["--internal-host", LOOPBACK, "--port", str(self.port), "--host", self.url]
        self._start("label-studio", argv, ready=self._serving, timeout_s=START_S, env=env)

    @property
    def listen_ports(self) -> list[int]:
        return [self.port]

    def _serving(self) -> bool:
        # Label Studio moves to another port when its own is taken: probe the one we gave.
        return self.call("GET", "/api/current-user/whoami")["email"] == "reviewer@example.com"

    def call(self, method: str, path: str, body: object = None) -> Any:
        """One REST request with the account's token; the decoded JSON answer."""
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=budget(60.0)) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:2000]
            raise LabelStudioError(f"{method} {path}: {error.code} {detail}") from error
