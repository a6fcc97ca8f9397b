#!/usr/bin/env python3
"""ClickHouse-compatible HTTP server for local development and tests, backed by chdb.

chdb (PyPI `chdb-core`) is the ClickHouse engine as an in-process library. This server puts the
ClickHouse HTTP interface in front of it, so a client written for a real ClickHouse server works
unchanged against it. See README.md beside this file for what is and is not supported.

    python server.py --data DIR [--host 127.0.0.1] [--port 8123]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROGRAM = "clickhouse-dev-server"

# URL parameters the ClickHouse HTTP handler reserves; every other parameter is a setting.
RESERVED_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "user",
        "password",
        "quota_key",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "close_session",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "stacktrace",
        "role",
        "client_protocol_version",
    }
)
# Settings that only steer the HTTP layer of a real server. chdb knows most of them, but they have
# no effect in-process, so they are handled (or ignored) here instead of being sent to the engine.
HTTP_LAYER_SETTINGS = frozenset(
    {
        "enable_http_compression",
        "http_zlib_compression_level",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "http_wait_end_of_query",
        "http_response_buffer_size",
        "add_http_cors_header",
        "cancel_http_readonly_queries_on_client_close",
    }
)
SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
EXCEPTION_CODE = re.compile(r"Code: (\d+)\. ")
FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*\Z", re.IGNORECASE)
INSERT_STATEMENT = re.compile(r"\s*INSERT\b", re.IGNORECASE)

# ClickHouse error codes (src/Common/ErrorCodes.cpp) that this server raises itself.
SYNTAX_ERROR = 62
NOT_IMPLEMENTED = 48
UNKNOWN_SETTING = 115
QUERY_IS_TOO_LARGE = 229
CANNOT_DECOMPRESS = 271
STD_EXCEPTION = 1001

# The HTTP status a real ClickHouse server gives each exception code
# (src/Server/HTTP/exceptionCodeToHTTPStatus.cpp); every other code is a 500.
_STATUS_CODES = {
    401: [194],  # REQUIRED_PASSWORD
    # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED, SET_NON_GRANTED_ROLE, ACCESS_DENIED
    403: [192, 193, 516, 512, 497],
    # BAD_ARGUMENTS, CANNOT_COMPILE_REGEXP, CANNOT_PARSE_* (TEXT, ESCAPE_SEQUENCE, QUOTED_STRING, DATE,
    # DATETIME, NUMBER, DOMAIN_VALUE_FROM_STRING, IPV4, IPV6, INPUT_ASSERTION_FAILED, UUID),
    # DUPLICATE_COLUMN, ILLEGAL_COLUMN, UNKNOWN_ELEMENT_IN_AST, UNKNOWN_TYPE_OF_AST_NODE,
    # THERE_IS_NO_COLUMN, TOO_DEEP_AST, TOO_BIG_AST, UNEXPECTED_AST_STRUCTURE, SYNTAX_ERROR,
    # INCORRECT_DATA, TYPE_MISMATCH, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    400: [36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8, 167, 168, 223, 62,
          117, 53, 321],
    # UNKNOWN_TABLE, UNKNOWN_FUNCTION, UNKNOWN_IDENTIFIER, UNKNOWN_TYPE, UNKNOWN_STORAGE,
    # UNKNOWN_DATABASE, UNKNOWN_SETTING, UNKNOWN_DIRECTION_OF_SORTING, UNKNOWN_AGGREGATE_FUNCTION,
    # UNKNOWN_FORMAT, UNKNOWN_DATABASE_ENGINE, UNKNOWN_TYPE_OF_QUERY, UNKNOWN_ROLE
    404: [60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511],
    413: [229],  # QUERY_IS_TOO_LARGE
    501: [48],  # NOT_IMPLEMENTED
    503: [209, 76, 439],  # SOCKET_TIMEOUT, CANNOT_OPEN_FILE, CANNOT_SCHEDULE_TASK
    411: [381],  # HTTP_LENGTH_REQUIRED
    408: [159],  # TIMEOUT_EXCEEDED
    415: [779],  # UNSUPPORTED_MEDIA_TYPE
}
HTTP_STATUS_BY_CODE = {code: status for status, codes in _STATUS_CODES.items() for code in codes}


def http_status_for(code: int) -> int:
    return HTTP_STATUS_BY_CODE.get(code, 500)


class QueryError(Exception):
    """An error to report the way ClickHouse does: `Code: N. DB::Exception: ...`."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.text = message if message.startswith("Code: ") else f"Code: {code}. DB::Exception: {message}"

    @classmethod
    def from_engine(cls, error: Exception) -> "QueryError":
        text = str(error).strip()
        match = EXCEPTION_CODE.search(text)
        if match:
            return cls(int(match.group(1)), text[match.start():])
        return cls(STD_EXCEPTION, f"{type(error).__name__}: {text}")


class BadRequest(Exception):
    """The HTTP request itself is malformed; the connection is closed after the reply."""


def quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def content_type_for(fmt: str) -> str:
    lower = fmt.lower()
    if lower.startswith("json") and "eachrow" in lower:
        return "application/x-ndjson; charset=UTF-8"
    if lower.startswith("json"):
        return "application/json; charset=UTF-8"
    if lower.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lower.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if lower in ("native", "rowbinary", "parquet", "arrow", "arrowstream", "orc", "avro", "msgpack"):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


class Engine:
    """The chdb engine bound to one data folder.

    A base connection keeps the engine open for the life of the server. Each query runs on a
    connection of its own, so `SET`, `USE` and URL settings last for that query only, as they do
    over the HTTP interface of a real server. Queries are serialized by default.
    """

    def __init__(self, data_dir: str, max_concurrent_queries: int):
        import chdb  # imported late: TZ must be set before the engine starts

        self._chdb = chdb
        self._path = data_dir
        self._base = chdb.connect(data_dir)
        self._capacity = max_concurrent_queries
        self._slots = threading.BoundedSemaphore(max_concurrent_queries)
        self._closed = False
        self.version = self._base.query("SELECT version()", "TabSeparated").bytes().decode().strip()

    def execute(self, sql: str, fmt: str, params: dict, settings: dict, database: str):
        with self._slots:
            if self._closed:
                raise QueryError(STD_EXCEPTION, "Server is shutting down")
            connection = self._chdb.connect(self._path)
            try:
                try:
                    for name, value in settings.items():
                        connection.query(f"SET {name} = {quote_string(value)}")
                    if database != "default":
                        connection.query(f"USE {quote_identifier(database)}")
                    return connection.query(sql, fmt, params=params)
                except Exception as error:  # chdb raises ChdbError/RuntimeError with ClickHouse's text
                    raise QueryError.from_engine(error) from None
            finally:
                connection.close()

    def close(self, timeout: float = 30.0):
        """Wait for running queries (by taking every slot), then shut the engine down."""
        deadline = time.monotonic() + timeout
        for _ in range(self._capacity):
            if not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                break
        self._closed = True
        self._base.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server_version = PROGRAM
    engine: Engine  # set on the class by main()
    max_body_bytes: int

    # -- HTTP plumbing ----------------------------------------------------------------------

    def version_string(self):
        return PROGRAM

    def log_message(self, format, *args):  # noqa: A002 - signature from BaseHTTPRequestHandler
        pass  # only failed queries are logged, by _log_failure

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def do_HEAD(self):
        path = urllib.parse.urlsplit(self.path).path
        self._reply(200 if path in ("/", "/ping", "/replicas_status") else 404, b"", head_only=True)

    def _dispatch(self):
        try:
            body = self._read_body()
        except BadRequest as error:
            self.close_connection = True
            self._reply(400, f"{error}\n".encode())
            return
        except QueryError as error:
            self.close_connection = True
            self._reply_error(error, query_id=str(uuid.uuid4()), sql="")
            return
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/ping" or url.path == "/replicas_status":
            self._reply(200, b"Ok.\n")
            return
        if url.path != "/":
            self._reply(404, f"There is no handle {url.path}\n\nUse / or /ping for health checks.\n".encode())
            return
        params = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
        if self.command == "GET" and not params and not body:
            self._reply(200, b"Ok.\n")
            return
        self._query(dict(params), body)

    def _read_body(self) -> bytes:
        encoding = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in encoding:
            body = self._read_chunked()
        else:
            length_header = self.headers.get("Content-Length")
            if length_header is None:
                body = b""
            else:
                try:
                    length = int(length_header)
                except ValueError:
                    raise BadRequest(f"Invalid Content-Length: {length_header!r}") from None
                if length < 0:
                    raise BadRequest(f"Invalid Content-Length: {length_header!r}")
                if length > self.max_body_bytes:
                    raise QueryError(QUERY_IS_TOO_LARGE, f"Request body of {length} bytes is too large")
                body = self._read_exactly(length)
        return self._decode_body(body)

    def _read_exactly(self, length: int) -> bytes:
        data = self.rfile.read(length)
        if len(data) != length:
            raise BadRequest("Unexpected end of request body")
        return data

    def _read_chunked(self) -> bytes:
        parts = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise BadRequest("Malformed chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise BadRequest(f"Malformed chunk size {line.strip()!r}") from None
            if size == 0:
                break
            total += size
            if total > self.max_body_bytes:
                raise QueryError(QUERY_IS_TOO_LARGE, "Request body is too large")
            parts.append(self._read_exactly(size))
            if self.rfile.readline(3).strip():
                raise BadRequest("Chunk is not followed by CRLF")
        while True:  # trailer fields, up to the empty line
            line = self.rfile.readline(8192)
            if not line:
                raise BadRequest("Unexpected end of chunked body")
            if line in (b"\r\n", b"\n"):
                break
        return b"".join(parts)

    def _decode_body(self, body: bytes) -> bytes:
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if not body or encoding in ("", "identity"):
            return body
        try:
            if encoding in ("gzip", "x-gzip"):
                return gzip.decompress(body)
            if encoding == "deflate":
                return zlib.decompress(body)
        except (OSError, zlib.error, EOFError) as error:
            raise QueryError(CANNOT_DECOMPRESS, f"Cannot decompress request body ({encoding}): {error}") from None
        raise QueryError(NOT_IMPLEMENTED, f"Content-Encoding {encoding!r} is not supported by {PROGRAM}")

    def _reply(self, status: int, body: bytes, headers=(), content_type="text/plain; charset=UTF-8",
               head_only=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _reply_error(self, error: QueryError, query_id: str, sql: str):
        status = http_status_for(error.code)
        text = error.text if error.text.endswith("\n") else error.text + "\n"
        first_line = error.text.splitlines()[0] if error.text else ""
        statement = " ".join(sql.split())
        if len(statement) > 300:
            statement = statement[:300] + "..."
        sys.stderr.write(f"{PROGRAM}: query {query_id} failed with HTTP {status}: {first_line} | {statement}\n")
        self._reply(
            status,
            text.encode(),
            headers=[
                ("X-ClickHouse-Exception-Code", str(error.code)),
                ("X-ClickHouse-Query-Id", query_id),
                ("X-ClickHouse-Timezone", "UTC"),
            ],
        )

    # -- queries ------------------------------------------------------------------------------

    def _query(self, params: dict, body: bytes):
        query_id = params.get("query_id") or str(uuid.uuid4())
        sql = params.get("query", "")
        try:
            if body:
                try:
                    text = body.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise QueryError(6, f"Request body is not valid UTF-8: {error}") from None
                sql = f"{sql}\n{text}" if sql else text
            if not sql.strip():
                raise QueryError(SYNTAX_ERROR, "Empty query. (SYNTAX_ERROR)")
            if params.get("compress") == "1" or params.get("decompress") == "1":
                raise QueryError(NOT_IMPLEMENTED, "ClickHouse block compression (compress/decompress) is not supported")

            fmt = self.headers.get("X-ClickHouse-Format") or params.get("default_format") or "TabSeparated"
            database = self.headers.get("X-ClickHouse-Database") or params.get("database") or "default"
            query_params = {name[6:]: value for name, value in params.items() if name.startswith("param_")}
            settings = {}
            for name, value in params.items():
                if name in RESERVED_PARAMS or name.startswith("param_") or name in HTTP_LAYER_SETTINGS:
                    continue
                if not SETTING_NAME.match(name):
                    raise QueryError(UNKNOWN_SETTING, f"Unknown setting '{name}'. (UNKNOWN_SETTING)")
                settings[name] = value

            started = time.monotonic_ns()
            result = self.engine.execute(sql, fmt, query_params, settings, database)
            elapsed_ns = time.monotonic_ns() - started
        except QueryError as error:
            self._reply_error(error, query_id, sql)
            return

        payload = result.bytes()
        if not INSERT_STATEMENT.match(sql):
            clause = FORMAT_CLAUSE.search(sql)
            if clause:
                fmt = clause.group(1)
        summary = {
            "read_rows": str(result.rows_read()),
            "read_bytes": str(result.bytes_read()),
            "written_rows": str(result.rows_written()),
            "written_bytes": str(result.bytes_written()),
            "total_rows_to_read": str(result.rows_read()),
            "result_rows": "0",
            "result_bytes": str(len(payload)),
            "elapsed_ns": str(elapsed_ns),
        }
        headers = [
            ("X-ClickHouse-Query-Id", query_id),
            ("X-ClickHouse-Format", fmt),
            ("X-ClickHouse-Timezone", "UTC"),
            ("X-ClickHouse-Summary", json.dumps(summary, separators=(",", ":"))),
        ]
        payload, encoding = self._maybe_compress(payload, params)
        if encoding:
            headers.append(("Content-Encoding", encoding))
        self._reply(200, payload, headers=headers, content_type=content_type_for(fmt))

    def _maybe_compress(self, payload: bytes, params: dict):
        if params.get("enable_http_compression") not in ("1", "true"):
            return payload, None
        accepted = [item.split(";")[0].strip().lower() for item in self.headers.get("Accept-Encoding", "").split(",")]
        level = int(params.get("http_zlib_compression_level") or 3)
        if "gzip" in accepted:
            return gzip.compress(payload, compresslevel=level), "gzip"
        if "deflate" in accepted:
            return zlib.compress(payload, level), "deflate"
        return payload, None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="ClickHouse HTTP interface on top of chdb, for development.")
    parser.add_argument("--data", required=True, help="data folder (created if missing; one server per folder)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--max-concurrent-queries", type=int, default=1,
                        help="queries run at once (default 1: serialized)")
    parser.add_argument("--max-body-bytes", type=int, default=256 * 1024 * 1024)
    args = parser.parse_args(argv)

    os.environ["TZ"] = "UTC"  # a real server in a container runs in UTC; be deterministic
    time.tzset()
    os.makedirs(args.data, exist_ok=True)
    data_dir = os.path.abspath(args.data)

    try:
        engine = Engine(data_dir, max(1, args.max_concurrent_queries))
    except Exception as error:
        sys.stderr.write(f"{PROGRAM}: cannot open chdb data folder {data_dir}: {error}\n")
        return 1
    Handler.engine = engine
    Handler.max_body_bytes = args.max_body_bytes
    try:
        server = Server((args.host, args.port), Handler)
    except OSError as error:
        sys.stderr.write(f"{PROGRAM}: cannot listen on {args.host}:{args.port}: {error}\n")
        engine.close()
        return 1

    def request_shutdown(signum, _frame):
        sys.stderr.write(f"{PROGRAM}: received {signal.Signals(signum).name}, shutting down\n")
        # shutdown() waits for serve_forever() to return, so it must not run on this (main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, request_shutdown)
    signal.signal(signal.SIGINT, request_shutdown)

    sys.stderr.write(
        f"{PROGRAM}: listening on http://{args.host}:{server.server_address[1]} "
        f"(chdb engine {engine.version}, data {data_dir}, pid {os.getpid()})\n"
    )
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
    sys.stderr.write(f"{PROGRAM}: stopped\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
