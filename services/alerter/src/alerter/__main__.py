"""``python -m alerter``: serve the alerter (settings from the environment)."""

from __future__ import annotations

from alerter.app import build_app
from alerter.config import Settings
from mlops_platform.http import serve


def main() -> None:
    settings = Settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
