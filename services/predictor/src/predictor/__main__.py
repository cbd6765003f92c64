"""``python -m predictor``: serve the predictor (settings from the environment)."""

from __future__ import annotations

from mlops_platform.http import serve
from predictor.app import build_app
from predictor.config import Settings


def main() -> None:
    settings = Settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
