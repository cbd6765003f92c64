"""``python -m recommender``: serve the recommender (HTTP API + Faust stream processing)."""

from __future__ import annotations

from mlops_platform.http import serve
from recommender.app import build_app
from recommender.config import Settings


def main() -> None:
    settings = Settings()
    serve(build_app(settings), settings)


if __name__ == "__main__":
    main()
