"""``python -m auto_responder``: serve the auto-responder (settings from the environment)."""

from __future__ import annotations

from auto_responder.app import build_app
from auto_responder.config import Settings
from mlops_platform.http import serve


def main() -> None:
    settings = Settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
