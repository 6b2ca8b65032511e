"""Real local servers for ingestion tests: a SkyServer stub and moto's S3 server, on 127.0.0.1."""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd

BETWEEN = re.compile(r"s\.mjd\s+BETWEEN\s+(\d+)\s+AND\s+(\d+)", re.IGNORECASE)


class SkyServerStub:
    """Answers SkyServer SqlSearch GETs in its CSV format (#Table1 line first) from a DataFrame.

    `faults` is a list consumed one per request: 'error500', 'error_page', 'hang', or None.
    """

    def __init__(self, rows: pd.DataFrame):
        self.rows = rows
        self.faults: list[str | None] = []
        self.requests: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                sql = query.get("cmd", [""])[0]
                stub.requests.append(sql)
                fault = stub.faults.pop(0) if stub.faults else None
                if fault == "hang":
                    time.sleep(2.0)
                    return self._send(200, "#Table1\n")
                if fault == "error500":
                    return self._send(500, "Internal Server Error")
                match = BETWEEN.search(sql)
                if fault == "error_page" or not match or query.get("format") != ["csv"]:
                    return self._send(200, "<html><body>Error: Incorrect syntax near 'FROM'.</body></html>")
                first, last = int(match.group(1)), int(match.group(2))
                week = stub.rows[(stub.rows["MJD"] >= first) & (stub.rows["MJD"] <= last)].copy()
                # SkyServer returns exact integer IDs; the Kaggle sample stores them as floats.
                for column in ("obj_ID", "spec_obj_ID"):
                    week[column] = week[column].map(lambda v: str(int(v)))
                self._send(200, "#Table1\n" + week.to_csv(index=False))

            def _send(self, status: int, body: str):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/dr17/SkyServerWS/SearchTools/SqlSearch"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def moto_s3_server(monkeypatch):
    """moto's standalone S3-compatible HTTP server on a free loopback port."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
