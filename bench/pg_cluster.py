"""A private PostgreSQL cluster tuned for bulk loads, to tell server settings from our code.

The machine's shared server keeps Debian's defaults (128 MB of shared buffers,
1 GB of WAL between checkpoints). A benchmark run with `--private-pg` starts
this cluster with `TUNED_SETTINGS` (Debian's initdb and pg_ctl, as the
`postgres` user when run as root), uses it, and removes it. If a figure moves
with these settings, the server's configuration is what limits it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Larger than Debian's defaults wherever a bulk load could be waiting on the server.
TUNED_SETTINGS = {
    "shared_buffers": "1GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "wal_compression": "on",
    "wal_buffers": "64MB",
    "maintenance_work_mem": "256MB",
}


def _bin(name: str) -> str:
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install Debian's postgresql package")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_cluster() -> Iterator[str]:
    """Yield the admin URL of a fresh cluster with `TUNED_SETTINGS`; stop it after."""
    workdir = Path(tempfile.mkdtemp(prefix="circulars-bench-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(workdir, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = workdir / "data", _free_port()
    subprocess.run(
        [*as_postgres, _bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    settings = {
        **TUNED_SETTINGS,
        "port": str(port),
        "listen_addresses": "'127.0.0.1'",
        "unix_socket_directories": f"'{workdir}'",
    }
    with open(data / "postgresql.conf", "a") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    pg_ctl = [*as_postgres, _bin("pg_ctl"), "-D", str(data), "-l", str(workdir / "log")]
    subprocess.run([*pg_ctl, "-w", "start"], check=True, capture_output=True)
    try:
        time.sleep(0.5)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
