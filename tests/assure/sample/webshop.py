"""A tiny web shop for the dynamic stage to scan: one vulnerable build, one fixed.

The vulnerable build reflects the search term into the page unescaped (reflected
XSS, CWE-79) and shows the database's error text when an item id breaks the
query it is pasted into (SQL injection, CWE-89). The fixed build escapes the
term and binds the id as a parameter. Pure standard library, so the scanner
under test is the only real tool involved.

Run: ``python webshop.py --variant vulnerable --port 8080`` (loopback only),
or start it in-process with :func:`serve`.
"""

from __future__ import annotations

import argparse
import html
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

Variant = Literal["vulnerable", "fixed"]
VARIANTS: tuple[Variant, ...] = ("vulnerable", "fixed")

_ITEMS = [(1, "red shoes", 40), (2, "blue hat", 15), (3, "green scarf", 25)]

_INDEX = """<!doctype html>
<html><head><title>shop</title></head><body>
<h1>shop</h1>
<form action="/search" method="get"><input name="q" value="shoes"><input type="submit"></form>
<ul><li><a href="/item?id=1">red shoes</a></li><li><a href="/item?id=2">blue hat</a></li></ul>
</body></html>
"""


def _database() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price INTEGER)")
    db.executemany("INSERT INTO items VALUES (?, ?, ?)", _ITEMS)
    return db


def _handler(variant: Variant) -> type[BaseHTTPRequestHandler]:
    db = _database()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "webshop/1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the scanner sends hundreds of requests."""

        def _send(self, status: int, body: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            if variant == "fixed":
                self.send_header("X-Frame-Options", "DENY")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Content-Security-Policy", "default-src 'self'")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path == "/":
                self._send(200, _INDEX)
            elif url.path == "/search":
                term = query.get("q", [""])[0]
                shown = term if variant == "vulnerable" else html.escape(term)
                found = [name for _, name, _ in _ITEMS if term.lower() in name]
                items = "".join(f"<li>{html.escape(n)}</li>" for n in found)
                self._send(200, f"<html><body><p>Results for {shown}</p><ul>{items}</ul>"
                                "</body></html>")
            elif url.path == "/item":
                self._item(query.get("id", ["1"])[0])
            else:
                self._send(404, "<html><body>not found</body></html>")

        def _item(self, ident: str) -> None:
            try:
                with lock:
                    if variant == "vulnerable":
                        sql = "SELECT name, price FROM items WHERE id = " + ident  # noqa: S608
                        row = db.execute(sql).fetchone()
                    else:
                        row = db.execute("SELECT name, price FROM items WHERE id = ?",
                                         (ident,)).fetchone()
            except sqlite3.Error as exc:
                # the planted leak: the database's own error text in the page
                self._send(500, f"<html><body>sqlite3.OperationalError: {html.escape(str(exc))}"
                                "</body></html>")
                return
            if row is None:
                self._send(404, "<html><body>no such item</body></html>")
                return
            self._send(200, f"<html><body><h1>{html.escape(row[0])}</h1><p>{row[1]} EUR</p>"
                            "</body></html>")

    return Handler


@contextmanager
def serve(variant: Variant, port: int = 0) -> Iterator[str]:
    """Run the shop on 127.0.0.1 in a thread; yields its base URL, stops on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(variant))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"webshop-{variant}",
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--variant", choices=VARIANTS, default="fixed")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    with serve(args.variant, args.port) as url:
        print(url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
