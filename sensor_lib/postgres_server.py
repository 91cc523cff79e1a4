"""Run PostgreSQL without Docker: the server from the `pgserver` wheel, on 127.0.0.1.

`make demo` starts one when POSTGRES_URL is not set, the tests start one each, and
`make postgres` starts one for the tutorial:

    python -m sensor_lib.postgres_server --port 15432   # data in postgres-data/

The server runs in the foreground as our child, so it stops with us (Ctrl-C, a
closed terminal, or our own death). PostgreSQL refuses to run as root; as root,
the server runs as `nobody`, which then owns the data folder, and every folder
above the data and the binaries gets search permission for others (o+x) where it
lacks it, as the `pgserver` package does itself.

With a certificate and its key, the server takes TLS (`ssl=on`); with `tls_only`, it
takes TCP logins over TLS only (`hostssl` in pg_hba.conf). The `pgserver` wheel's
build has no SSL, so such a server runs a PostgreSQL built with OpenSSL from the
machine (Debian's `postgresql` package, for one).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2

from sensor_lib.servers import ServerProcess, ServerStartError, serve_in_foreground

# The demo's and the tutorial's database; docker-compose.yml's postgres service has the same.
USER, PASSWORD, DATABASE = "sensor", "sensor", "sensors"
TUTORIAL_PORT = 15432
# With tls_only: the Unix socket in the data folder as initdb has it, TCP over TLS only.
TLS_ONLY_HBA = """local all all trust
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl all all ::1/128 scram-sha-256
"""


def binaries() -> Path:
    """The folder of initdb and postgres inside the pgserver wheel."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(
            "the embedded PostgreSQL needs the pgserver wheel: "
            "run `make install`, or pip install -r requirements.txt"
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def has_ssl(folder: Path) -> bool:
    """Whether the PostgreSQL in `folder` was built with OpenSSL (its pg_config says so)."""
    try:
        configure = subprocess.run(
            [str(folder / "pg_config"), "--configure"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--with-openssl" in configure or "--with-ssl=openssl" in configure


def binaries_with_ssl() -> Path:
    """The folder of a PostgreSQL built with OpenSSL: the wheel's if it is, else the
    machine's (on the PATH, or Debian's /usr/lib/postgresql/<version>/bin, newest first)."""
    on_path = shutil.which("postgres")
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates = [binaries(), *([Path(on_path).resolve().parent] if on_path else []), *debian]
    for folder in candidates:
        if (folder / "initdb").exists() and has_ssl(folder):
            return folder
    raise ServerStartError(
        "a server with TLS needs PostgreSQL built with OpenSSL, which the pgserver wheel's "
        "is not: install one (Debian: apt-get install postgresql)"
    )


def reachable_by_others(path: Path) -> None:
    """Give others search permission (o+x) on each folder above `path` that lacks it."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


class PostgresServer(ServerProcess):
    """A PostgreSQL server on 127.0.0.1 with its data in `data_dir`; a context manager."""

    name = "PostgreSQL"
    stop_signal = signal.SIGINT  # "fast" shutdown: end the sessions, then stop

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        durable: bool = True,
        ssl_cert_file: Path | None = None,
        ssl_key_file: Path | None = None,
        tls_only: bool = False,
        **options: object,
    ) -> None:
        """`durable=False` skips flushing to disk: for data that goes when the server does.
        `ssl_cert_file` and `ssl_key_file` (PEM) turn TLS on; `tls_only` refuses TCP
        logins without it."""
        super().__init__(port, **options)  # type: ignore[arg-type]
        self.tls = None if ssl_cert_file is None else (ssl_cert_file, ssl_key_file)
        if (ssl_cert_file is None) != (ssl_key_file is None) or (tls_only and not self.tls):
            raise ValueError("TLS needs both ssl_cert_file and ssl_key_file")
        self.data_dir = data_dir.resolve()
        self.durable = durable
        self.tls_only = tls_only
        self.log_path = self.log_path or self.data_dir / "server.log"  # made after initdb
        self.bin = binaries() if self.tls is None else binaries_with_ssl()

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@{self.host}:{self.port}/{DATABASE}"

    def run_as(self) -> tuple[int, int] | None:
        if os.geteuid() != 0:
            return None
        nobody = pwd.getpwnam("nobody")
        return nobody.pw_uid, nobody.pw_gid

    def command(self) -> list[str]:
        if not (self.data_dir / "PG_VERSION").exists():
            self.initdb()
        fast = [] if self.durable else ["-c", "fsync=off", "-c", "full_page_writes=off"]
        if self.tls_only:
            self.write_owned("pg_hba.conf", TLS_ONLY_HBA.encode(), 0o600)
        return [
            str(self.bin / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            str(self.data_dir),
            *fast,
            *self.ssl_options(),
        ]

    def ssl_options(self) -> list[str]:
        """`ssl=on` with copies of the certificate and key in the data folder, owned by
        the server's user: PostgreSQL refuses a key that others can read, and as root
        the server runs as nobody, who could not read ours."""
        if self.tls is None:
            return []
        cert, key = self.tls
        self.write_owned("server.crt", cert.read_bytes(), 0o644)
        self.write_owned("server.key", key.read_bytes(), 0o600)
        return ["-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key"]

    def write_owned(self, name: str, content: bytes, mode: int) -> None:
        """Write the data folder's file `name`, with `mode`, owned by the server's user."""
        path = self.data_dir / name
        path.unlink(missing_ok=True)
        path.touch(mode=mode)  # the mode before the content: a key is never readable by others
        if (user := self.run_as()) is not None:
            os.chown(path, *user)
        path.write_bytes(content)

    def initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = self.run_as()
        if user is not None:
            os.chown(self.data_dir, *user)
            reachable_by_others(self.data_dir.parent)
            reachable_by_others(self.bin)
        with tempfile.NamedTemporaryFile("w", suffix=".pw") as secret:  # in /tmp: nobody reads it
            secret.write(PASSWORD)
            secret.flush()
            if user is not None:
                os.chown(secret.name, *user)
            done = subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    USER,
                    "-E",
                    "UTF8",
                    f"--pwfile={secret.name}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
                **({} if user is None else {"user": user[0], "group": user[1], "extra_groups": []}),
            )
        if done.returncode != 0:
            raise ServerStartError(f"initdb failed: {(done.stderr or done.stdout).strip()}")

    def is_ready(self) -> bool:
        """It takes logins; the first time, once it has the demo's database too."""
        try:
            psycopg2.connect(self.url, connect_timeout=1).close()
            return True
        except psycopg2.OperationalError as exc:
            if f'database "{DATABASE}" does not exist' not in str(exc):
                return False
        admin = psycopg2.connect(self.url.rsplit("/", 1)[0] + "/postgres", connect_timeout=1)
        admin.autocommit = True  # CREATE DATABASE runs outside a transaction
        try:
            admin.cursor().execute(f"CREATE DATABASE {DATABASE}")
        finally:
            admin.close()
        return True

    def cleanup(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=TUTORIAL_PORT, help="port on 127.0.0.1")
    parser.add_argument(
        "--data", type=Path, default=Path("postgres-data"), help="data folder, kept between runs"
    )
    args = parser.parse_args(argv)
    try:
        server = PostgresServer(args.data, args.port)
    except ServerStartError as exc:  # no pgserver wheel: one line, not a traceback
        print(f"{PostgresServer.name}: {exc}", file=sys.stderr)
        return 1
    server.cleanup = lambda: None  # type: ignore[method-assign]  # the tutorial keeps its data
    url = server.url.replace("127.0.0.1", "localhost")
    default = args.port == TUTORIAL_PORT  # the sink's default POSTGRES_URL
    steps = (
        f"In another terminal{'' if default else ', with POSTGRES_URL=' + url}:\n"
        "  python sensor_stream_sink.py\n"
        "and to query the table (psql from the pgserver wheel, or your own):\n"
        f"  {server.bin / 'psql'} {url}"
    )
    return serve_in_foreground(server, steps)


if __name__ == "__main__":
    sys.exit(main())
