"""``python -m schema_registry_server``: run the registry with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from schema_registry_server.app import create_app
from schema_registry_server.log_setup import configure_logging
from schema_registry_server.settings import Settings

# uvicorn's own exit code when the application fails to start.
_STARTUP_FAILURE = 3


def main() -> None:
    """Read settings from the environment and serve until SIGTERM/SIGINT."""
    settings = Settings()
    configure_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        # Logging is configured above (JSON); uvicorn must not install its own handlers, and the
        # request log comes from the app's middleware.
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        sys.exit(_STARTUP_FAILURE)


if __name__ == "__main__":
    main()
