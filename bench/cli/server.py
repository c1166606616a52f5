"""``cvae-bench server``: a thin launcher of ``mlflow server`` for many workers on one tracking store.

It adds two things to ``mlflow server``: it refuses to bind a non-loopback address unless told to
(the MLflow server has no authentication of its own), and it never prints the backend store's
password. Everything else is MLflow's: see ``mlflow server --help``.
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


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_command_line(backend_store_uri: str, artifacts_destination: str, host: str, port: int,
                        workers: int | None = None, extra: list[str] | None = None) -> list[str]:
    """The ``mlflow server`` invocation (run with this interpreter, so the venv's MLflow is used)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
           "--artifacts-destination", artifacts_destination, "--serve-artifacts", "--host", host, "--port", str(port)]
    if workers:
        cmd += ["--workers", str(workers)]
    return cmd + list(extra or [])


def run_server(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.allow_remote:
        raise CLIError(f"refusing to bind {args.host}: the MLflow server has no authentication, so anyone who can "
                       f"reach {args.host}:{args.port} could read and delete every run; bind 127.0.0.1 and use an "
                       "SSH tunnel or an authenticating proxy, or pass --allow-remote on a trusted network")
    if args.port < 1 or args.port > 65535:
        raise CLIError(f"--port {args.port}: must be in 1..65535")
    if args.workers is not None and args.workers < 1:
        raise CLIError(f"--workers {args.workers}: must be an integer >= 1")
    extra = args.mlflow_args[1:] if args.mlflow_args[:1] == ["--"] else args.mlflow_args
    cmd = server_command_line(args.backend_store_uri, args.artifacts_destination, args.host, args.port,
                              args.workers, extra)
    print(f"cvae-bench server: MLflow tracking server on http://{args.host}:{args.port} "
          f"(backend {redact_url(args.backend_store_uri)}, artifacts {args.artifacts_destination}); UI: "
          f"{ui_link(f'http://{args.host}:{args.port}', '/experiments')}", flush=True)
    print(f"  workers: --tracking-uri http://{args.host}:{args.port}   (Ctrl-C stops the server)", flush=True)
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY=os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true"))
    proc = subprocess.Popen(cmd, env=env)
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
        epilog="Arguments after `--` go to `mlflow server` unchanged (e.g. -- --allowed-hosts mlflow.lan:5000).")
    p.add_argument("--backend-store-uri", default="sqlite:///mlflow.db", metavar="URL",
                   help="where runs, params and metrics live (default sqlite:///mlflow.db; PostgreSQL for many workers)")
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
