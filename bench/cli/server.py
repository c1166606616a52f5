"""``cvae-bench server``: a thin launcher of ``mlflow server`` for many workers on one tracking store.

It adds three things to ``mlflow server``: it refuses to bind a non-loopback address unless told to
(the MLflow server has no authentication of its own), and no argument passed through to ``mlflow
server`` may change where it listens (:data:`BIND_OPTIONS`); it never prints the backend store's
password, and hands the backend store URI to the ``mlflow server`` child in its environment
(``MLFLOW_BACKEND_STORE_URI``, which MLflow's command line reads), not on its command line, where
``ps`` would show it to every local user; it opens the backend store before starting the server,
so that a URI MLflow cannot use or a database that does not answer is one line, not a traceback.
Everything else is MLflow's: see ``mlflow server --help``.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import subprocess
import sys

from bench.errors import CLIError
from bench.tracking.redaction import redact_url
from bench.tracking.ui_links import ui_link

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
#: ``mlflow server`` options that decide where it listens (or that would put the backend store URI on
#: its command line): none of them may be passed through after ``--``. ``--gunicorn-opts``,
#: ``--uvicorn-opts`` and ``--waitress-opts`` are forwarded to the web server, which takes ``--bind``,
#: ``--host``, ``--port``, ``--uds``, ``--fd``, ``--listen`` ... there.
BIND_OPTIONS = ("--host", "-h", "--port", "-p", "--gunicorn-opts", "--uvicorn-opts", "--waitress-opts",
                "--backend-store-uri")
#: Environment variables ``mlflow server`` reads as the same options (``MLFLOW_HOST`` and
#: ``MLFLOW_PORT`` are not here: the ``--host`` and ``--port`` this command passes override them).
BIND_ENVIRONMENT = ("MLFLOW_GUNICORN_OPTS", "MLFLOW_UVICORN_OPTS")
BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"
DEFAULT_BACKEND = "sqlite:///mlflow.db"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_command_line(artifacts_destination: str, host: str, port: int, workers: int | None = None,
                        extra: list[str] | None = None) -> list[str]:
    """The ``mlflow server`` invocation (run with this interpreter, so the venv's MLflow is used). The
    backend store URI is not on it: see :func:`server_environment`."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--artifacts-destination", artifacts_destination,
           "--serve-artifacts", "--host", host, "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    return cmd + list(extra or [])


def server_environment(backend_store_uri: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The ``mlflow server`` child's environment: ours, the backend store URI in ``MLFLOW_BACKEND_STORE_URI``
    (readable by the same user only, unlike a command line), telemetry off unless set."""
    env = dict(os.environ if environ is None else environ)
    env[BACKEND_ENV] = backend_store_uri
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return env


def check_passed_through(extra: list[str], environ: dict[str, str] | None = None) -> None:
    """:class:`CLIError` if an argument for ``mlflow server`` (or the environment) would change where it
    listens: ``--host``, ``-h0.0.0.0``, ``--port=80``, ``--uvicorn-opts "--host ..."``, ... ."""
    for arg in extra:
        name = arg.split("=", 1)[0]
        short = arg[:2] if arg.startswith("-") and not arg.startswith("--") else None
        if name in BIND_OPTIONS or short in BIND_OPTIONS:
            raise CLIError(f"{arg.split('=', 1)[0] if short is None else short} cannot be passed through to "
                           "`mlflow server`: it decides where the server listens (or puts the store's password on "
                           "its command line); use this command's --host, --port, --workers and "
                           "--backend-store-uri")
    environ = os.environ if environ is None else environ
    for var in BIND_ENVIRONMENT:
        if environ.get(var):
            raise CLIError(f"${var} is set: `mlflow server` would forward it to its web server, where it can change "
                           "where the server listens; unset it (this command's --host, --port and --workers set "
                           "where and how it listens)")


def check_port_free(host: str, port: int) -> None:
    """:class:`CLIError` if ``host:port`` cannot be bound (in use, or an address of no interface here)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise CLIError(f"--host {host}: cannot resolve it ({exc.strerror or exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            raise CLIError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def check_backend_store(backend_store_uri: str) -> None:
    """Open the backend store as the server will (creating or upgrading its tables): a URI MLflow rejects,
    or a database that does not answer, is a one-line :class:`CLIError` here, not a traceback from the
    server after it started."""
    from bench.tracking.store import make_client

    try:
        make_client(backend_store_uri)
    except CLIError as exc:
        raise CLIError(f"--backend-store-uri: {exc}") from None


def launch(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start the ``mlflow server`` child."""
    return subprocess.Popen(cmd, env=env)


def run_server(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.allow_remote:
        raise CLIError(f"refusing to bind {args.host}: the MLflow server has no authentication, so anyone who can "
                       f"reach {args.host}:{args.port} could read and delete every run; bind 127.0.0.1 and use an "
                       "SSH tunnel or an authenticating proxy, or pass --allow-remote on a trusted network")
    if args.port < 1 or args.port > 65535:
        raise CLIError(f"--port {args.port}: must be in 1..65535")
    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers {args.workers}: must be an integer >= 1")
    backend = args.backend_store_uri or os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND
    extra = args.mlflow_args[1:] if args.mlflow_args[:1] == ["--"] else args.mlflow_args
    check_passed_through(extra)
    check_port_free(args.host, args.port)
    check_backend_store(backend)
    cmd = server_command_line(args.artifacts_destination, args.host, args.port, args.workers, extra)
    print(f"cvae-bench server: MLflow tracking server on http://{args.host}:{args.port} "
          f"(backend {redact_url(backend)}, artifacts {args.artifacts_destination}); UI: "
          f"{ui_link(f'http://{args.host}:{args.port}', '/experiments')}", flush=True)
    print(f"  workers: --tracking-uri http://{args.host}:{args.port}   (Ctrl-C stops the server)", flush=True)
    proc = launch(cmd, server_environment(backend))
    # Stop the server with us on SIGTERM too (service managers send it), not only on Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 130


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "server", help="launch an MLflow tracking server for many workers",
        description="Launch `mlflow server` so that many `cvae-bench` workers on several machines log to one "
                    "tracking store. Use a PostgreSQL backend store for many workers "
                    "(postgresql://user:password@host:5432/mlflow); the password is never printed. Binds to "
                    "loopback unless --allow-remote is given.",
        epilog="Arguments after `--` go to `mlflow server` unchanged (e.g. -- --allowed-hosts mlflow.lan:5000), "
               "except those that decide where it listens (--host/-h, --port/-p, --gunicorn-opts, --uvicorn-opts, "
               "--waitress-opts) and --backend-store-uri. The backend store URI reaches `mlflow server` in its "
               "environment, not on its command line (which `ps` shows to every local user); to keep it off this "
               "command's command line too, set $MLFLOW_BACKEND_STORE_URI instead of --backend-store-uri.")
    p.add_argument("--backend-store-uri", default=None, metavar="URL",
                   help=f"where runs, params and metrics live (default: ${BACKEND_ENV}, else {DEFAULT_BACKEND}; "
                        "PostgreSQL for many workers)")
    p.add_argument("--artifacts-destination", default="./mlartifacts", metavar="DIR",
                   help="where the server stores figures and files (default ./mlartifacts)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    p.add_argument("--workers", type=int, default=None, help="server worker processes (MLflow's default if unset)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host (the server has no authentication: trusted networks only)")
    p.add_argument("mlflow_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=run_server)
    return p
