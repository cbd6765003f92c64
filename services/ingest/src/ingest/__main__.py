"""``python -m ingest``: serve the ingest API (settings from the environment)."""

from __future__ import annotations

from ingest.app import build_app
from ingest.config import Settings
from mlops_platform.http import serve


def main() -> None:
    settings = Settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
