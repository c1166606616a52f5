"""The messages between ``cvae-bench train`` and its tracking process, and how they are framed.

Messages, training process -> tracking process (stdin, length-prefixed pickles)::

    ("start", tracking_uri, experiment, run_name, tags, params)   open the store, create the run
    ("metrics", metrics, step)                                     one log_batch
    ("params", params) / ("tags", tags)                            one log_batch
    ("figures", {name: FigureData})                                draw and log each figure (bench.figures)
    ("text", text, artifact_file)                                  one text artifact
    ("file", local_path, artifact_dir)                            one file artifact; its folder is removed
    ("delete", artifact_dir)                                       delete the run's artifacts there
    ("datasets", [input, ...])                                     the run's dataset inputs
    ("model", saved_folder, options)                               a logged model; the folder is removed
    ("end", status, reason)                                        end the run; the last message

and back (a pipe of its own)::

    ("run", run_id)                  the run exists
    ("error", phase, message)        phase "open": the store could not be opened, no run exists;
                                     "run": a write failed, the run is incomplete (ended FAILED if possible)
    ("done", run_id, note)           everything is written (note: None, or how many writes wait in
                                     the local spool because the server is down); the process exits

Each message is a length-prefixed pickle (a 4-byte big-endian length, then the payload).
"""

from __future__ import annotations

import pickle
import struct
from typing import BinaryIO

from bench.errors import CLIError
from bench.tracking.redaction import redact_url

HEADER = struct.Struct("!I")  # payload length in bytes
#: Longest error detail passed on, in characters (one line).
MAX_DETAIL = 300


def frame(message: tuple) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


def read_message(stream: BinaryIO) -> tuple | None:
    """The next message, or None at end-of-file (also on a truncated message)."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    payload = stream.read(size)
    return pickle.loads(payload) if len(payload) == size else None


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, passwords masked, at most :data:`MAX_DETAIL` characters
    (SQLAlchemy's echo of the failed statement left out)."""
    text = " ".join(str(exc).split()).split(" [SQL: ")[0]
    if not isinstance(exc, CLIError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return redact_url(text)[:MAX_DETAIL]
