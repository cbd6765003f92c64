"""``python -m drift_detector``: serve the drift detector."""

from __future__ import annotations

from drift_detector.app import build_app
from drift_detector.config import Settings
from mlops_platform.http import serve


def main() -> None:
    settings = Settings()
    serve(build_app(settings), settings)


# Guarded: the report worker's spawned process imports this module too.
if __name__ == "__main__":
    main()
