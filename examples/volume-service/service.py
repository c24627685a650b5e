#!/usr/bin/env python3
"""A small block-storage API for the volume-service example, in Python's standard library.

It stands where Cinder's database and scheduler stand behind the volume-create flow: a quota
ledger with reservations (reserve, commit, roll back), volume records and a scheduler queue,
kept in SQLite. Every change runs in one ``BEGIN IMMEDIATE`` transaction, so runs racing for
the last units of quota are served one at a time and the ledger never goes over its limits.
Every call but ``GET /healthz`` needs ``Authorization: Bearer <token>``, the token read from
the variable ``VOLUME_API_TOKEN``.

Every call that creates something takes an idempotency ``key`` and answers a repeated key with
what the first call made (200 instead of 201); every undo (rollback, uncommit, delete) of
something already undone, or never made, succeeds or answers 404, so tasks can revert twice.

    VOLUME_API_TOKEN=... python3 service.py --port 0 --port-file port --db volumes.db

API (JSON in and out; errors are ``{"error": code, "message": text, ...}``):

    GET    /healthz                       200 {"ok": true}, no token needed
    GET    /v3/quota                      limits and usage per resource
    POST   /v3/quota/reserve              {key, volumes, gigabytes} -> 201 reservation | 413 over-quota
    POST   /v3/quota/commit               {reservation_id} -> 200 reservation (committed)
    POST   /v3/quota/uncommit             {reservation_id} -> 200 reservation (reserved again)
    POST   /v3/quota/rollback             {reservation_id} or {key} -> 200 reservation (rolled_back)
                                          (these three add "changed": false when there was
                                          nothing to do)
    GET    /v3/quota/reservations         {"reservations": [...]}
    POST   /v3/volumes                    {key, size, availability_zone, volume_type,
                                           display_name?, description?} -> 201 volume
    GET    /v3/volumes, /v3/volumes/ID    {"volumes": [...]}, volume
    DELETE /v3/volumes/ID, /v3/volumes?key=KEY   200 {"id", "deleted": true}
    POST   /v3/scheduler/requests         {volume_id, availability_zone, size, volume_type}
                                          -> 201 request | 409 zone-unavailable
    GET    /v3/scheduler/requests         {"requests": [...]}
    DELETE /v3/scheduler/requests/VOLUME_ID       200 {"volume_id", "deleted": true}
    GET    /v3/ledger                     usage against the reservations and records, with
                                          "consistent" and the "problems" found
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import secrets
import sqlite3
import sys
import threading
import time
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

RESOURCES = ("volumes", "gigabytes")

SCHEMA = """
CREATE TABLE IF NOT EXISTS quota_limits (
    resource   TEXT PRIMARY KEY,
    hard_limit INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quota_usage (
    resource TEXT PRIMARY KEY,
    in_use   INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reservations (
    id         TEXT PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    volumes    INTEGER NOT NULL,
    gigabytes  INTEGER NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'rolled_back')),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS volumes (
    id                TEXT PRIMARY KEY,
    key               TEXT NOT NULL UNIQUE,
    size              INTEGER NOT NULL,
    availability_zone TEXT NOT NULL,
    volume_type       TEXT NOT NULL,
    display_name      TEXT,
    description       TEXT,
    status            TEXT NOT NULL,
    created_at        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS scheduler_queue (
    volume_id         TEXT PRIMARY KEY,
    availability_zone TEXT NOT NULL,
    size              INTEGER NOT NULL,
    volume_type       TEXT NOT NULL,
    state             TEXT NOT NULL,
    queued_at         REAL NOT NULL
);
"""


class ApiError(Exception):
    """An answer other than success: the status, a kebab-case code, a sentence, extras."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": code, "message": message, **extra}


def new_id() -> str:
    return secrets.token_hex(8)


class Store:
    """The SQLite database: one connection per thread, every change in BEGIN IMMEDIATE."""

    def __init__(self, path: str, limits: Dict[str, int], unavailable_zones: Tuple[str, ...]) -> None:
        self.path = path
        self.unavailable_zones = unavailable_zones
        self.local = threading.local()
        self.db().executescript(SCHEMA)
        with self.tx() as db:
            for resource, limit in limits.items():
                db.execute(
                    "INSERT INTO quota_limits (resource, hard_limit) VALUES (?, ?) "
                    "ON CONFLICT (resource) DO UPDATE SET hard_limit = excluded.hard_limit",
                    (resource, limit),
                )
                db.execute("INSERT OR IGNORE INTO quota_usage (resource) VALUES (?)", (resource,))

    def db(self) -> sqlite3.Connection:
        db = getattr(self.local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute("PRAGMA busy_timeout = 30000")
            self.local.db = db
        return db

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before the first read (BEGIN IMMEDIATE): what it reads
        nobody else changes until it commits."""
        db = self.db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- quota --------------------------------------------------------------------------

    @staticmethod
    def _reservation(db: sqlite3.Connection, where: str, value: str) -> Optional[Dict[str, Any]]:
        row = db.execute(f"SELECT * FROM reservations WHERE {where} = ?", (value,)).fetchone()
        return dict(row) if row else None

    @staticmethod
    def _usage(db: sqlite3.Connection) -> Dict[str, Dict[str, int]]:
        rows = db.execute(
            "SELECT l.resource, l.hard_limit, u.in_use, u.reserved FROM quota_limits l "
            "JOIN quota_usage u USING (resource) ORDER BY l.resource"
        ).fetchall()
        return {
            r["resource"]: {"limit": r["hard_limit"], "in_use": r["in_use"], "reserved": r["reserved"]}
            for r in rows
        }

    @staticmethod
    def _move(db: sqlite3.Connection, r: Dict[str, Any], column: str, sign: int) -> None:
        for resource in RESOURCES:
            db.execute(
                f"UPDATE quota_usage SET {column} = {column} + ? WHERE resource = ?",
                (sign * r[resource], resource),
            )

    def quota(self) -> Dict[str, Any]:
        return {"quota": self._usage(self.db())}

    def reserve(self, key: str, volumes: int, gigabytes: int) -> Tuple[int, Dict[str, Any]]:
        with self.tx() as db:
            existing = self._reservation(db, "key", key)
            if existing:
                return 200, existing
            usage = self._usage(db)
            wanted = {"volumes": volumes, "gigabytes": gigabytes}
            for resource in RESOURCES:
                u = usage[resource]
                if u["in_use"] + u["reserved"] + wanted[resource] > u["limit"]:
                    remaining = max(u["limit"] - u["in_use"] - u["reserved"], 0)
                    raise ApiError(
                        413,
                        "over-quota",
                        f"requested {wanted[resource]} {resource} but only {remaining} of "
                        f"{u['limit']} remain",
                        resource=resource,
                        requested=wanted[resource],
                        remaining=remaining,
                        **u,
                    )
            now = time.time()
            r = {
                "id": new_id(),
                "key": key,
                "volumes": volumes,
                "gigabytes": gigabytes,
                "state": "reserved",
                "created_at": now,
                "updated_at": now,
            }
            db.execute(
                "INSERT INTO reservations (id, key, volumes, gigabytes, state, created_at, updated_at) "
                "VALUES (:id, :key, :volumes, :gigabytes, :state, :created_at, :updated_at)",
                r,
            )
            self._move(db, r, "reserved", +1)
            return 201, r

    def _transition(self, db: sqlite3.Connection, r: Dict[str, Any], state: str) -> Dict[str, Any]:
        db.execute(
            "UPDATE reservations SET state = ?, updated_at = ? WHERE id = ?",
            (state, time.time(), r["id"]),
        )
        return self._reservation(db, "id", r["id"])  # type: ignore[return-value]

    def _find(self, db: sqlite3.Connection, body: Dict[str, Any]) -> Dict[str, Any]:
        if isinstance(body.get("reservation_id"), str):
            r = self._reservation(db, "id", body["reservation_id"])
        elif isinstance(body.get("key"), str):
            r = self._reservation(db, "key", body["key"])
        else:
            raise ApiError(422, "invalid-request", "give `reservation_id` (or `key`) as a string")
        if r is None:
            raise ApiError(404, "not-found", "no such reservation")
        return r

    def commit(self, body: Dict[str, Any]) -> Dict[str, Any]:
        with self.tx() as db:
            r = self._find(db, body)
            if r["state"] == "committed":
                return {**r, "changed": False}
            if r["state"] == "rolled_back":
                raise ApiError(409, "reservation-rolled-back", f"reservation {r['id']} was rolled back")
            self._move(db, r, "reserved", -1)
            self._move(db, r, "in_use", +1)
            return {**self._transition(db, r, "committed"), "changed": True}

    def uncommit(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """Takes committed usage back into the reservation (the undo of commit)."""
        with self.tx() as db:
            r = self._find(db, body)
            if r["state"] != "committed":
                return {**r, "changed": False}
            self._move(db, r, "in_use", -1)
            self._move(db, r, "reserved", +1)
            return {**self._transition(db, r, "reserved"), "changed": True}

    def rollback(self, body: Dict[str, Any]) -> Dict[str, Any]:
        with self.tx() as db:
            r = self._find(db, body)
            if r["state"] == "rolled_back":
                return {**r, "changed": False}
            if r["state"] == "committed":
                raise ApiError(
                    409, "reservation-committed", f"reservation {r['id']} is committed: uncommit it first"
                )
            self._move(db, r, "reserved", -1)
            return {**self._transition(db, r, "rolled_back"), "changed": True}

    def reservations(self) -> Dict[str, Any]:
        rows = self.db().execute("SELECT * FROM reservations ORDER BY created_at").fetchall()
        return {"reservations": [dict(r) for r in rows]}

    # -- volumes ------------------------------------------------------------------------

    def create_volume(self, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        key = need(body, "key", str)
        with self.tx() as db:
            row = db.execute("SELECT * FROM volumes WHERE key = ?", (key,)).fetchone()
            if row:
                return 200, dict(row)
            v = {
                "id": new_id(),
                "key": key,
                "size": need(body, "size", int),
                "availability_zone": need(body, "availability_zone", str),
                "volume_type": need(body, "volume_type", str),
                "display_name": body.get("display_name"),
                "description": body.get("description"),
                "status": "creating",
                "created_at": time.time(),
            }
            db.execute(
                "INSERT INTO volumes (id, key, size, availability_zone, volume_type, display_name, "
                "description, status, created_at) VALUES (:id, :key, :size, :availability_zone, "
                ":volume_type, :display_name, :description, :status, :created_at)",
                v,
            )
            return 201, v

    def volume(self, volume_id: str) -> Dict[str, Any]:
        row = self.db().execute("SELECT * FROM volumes WHERE id = ?", (volume_id,)).fetchone()
        if row is None:
            raise ApiError(404, "not-found", f"no volume {volume_id}")
        return dict(row)

    def volumes(self) -> Dict[str, Any]:
        rows = self.db().execute("SELECT * FROM volumes ORDER BY created_at").fetchall()
        return {"volumes": [dict(r) for r in rows]}

    def delete_volume(self, where: str, value: str) -> Dict[str, Any]:
        with self.tx() as db:
            row = db.execute(f"SELECT id FROM volumes WHERE {where} = ?", (value,)).fetchone()
            if row is None:
                raise ApiError(404, "not-found", f"no volume with {where} {value}")
            db.execute("DELETE FROM volumes WHERE id = ?", (row["id"],))
            return {"id": row["id"], "deleted": True}

    # -- scheduler ----------------------------------------------------------------------

    def schedule(self, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        volume_id = need(body, "volume_id", str)
        zone = need(body, "availability_zone", str)
        with self.tx() as db:
            row = db.execute("SELECT * FROM scheduler_queue WHERE volume_id = ?", (volume_id,)).fetchone()
            if row:
                return 200, dict(row)
            if db.execute("SELECT 1 FROM volumes WHERE id = ?", (volume_id,)).fetchone() is None:
                raise ApiError(404, "volume-not-found", f"no volume {volume_id} to schedule")
            if zone in self.unavailable_zones:
                raise ApiError(
                    409, "zone-unavailable", f"availability zone `{zone}` refuses new volumes", zone=zone
                )
            q = {
                "volume_id": volume_id,
                "availability_zone": zone,
                "size": need(body, "size", int),
                "volume_type": need(body, "volume_type", str),
                "state": "queued",
                "queued_at": time.time(),
            }
            db.execute(
                "INSERT INTO scheduler_queue (volume_id, availability_zone, size, volume_type, state, "
                "queued_at) VALUES (:volume_id, :availability_zone, :size, :volume_type, :state, :queued_at)",
                q,
            )
            return 201, q

    def scheduled(self) -> Dict[str, Any]:
        rows = self.db().execute("SELECT * FROM scheduler_queue ORDER BY queued_at").fetchall()
        return {"requests": [dict(r) for r in rows]}

    def unschedule(self, volume_id: str) -> Dict[str, Any]:
        with self.tx() as db:
            gone = db.execute("DELETE FROM scheduler_queue WHERE volume_id = ?", (volume_id,)).rowcount
            if not gone:
                raise ApiError(404, "not-found", f"volume {volume_id} is not queued")
            return {"volume_id": volume_id, "deleted": True}

    # -- the books ----------------------------------------------------------------------

    def ledger(self) -> Dict[str, Any]:
        """Usage against the reservations, and the reservations against the records: every
        committed reservation is one volume record and one scheduler request."""
        with self.tx() as db:  # one snapshot of everything
            usage = self._usage(db)
            sums = {
                state: dict(
                    db.execute(
                        "SELECT COUNT(*) AS n, COALESCE(SUM(volumes), 0) AS volumes, "
                        "COALESCE(SUM(gigabytes), 0) AS gigabytes FROM reservations WHERE state = ?",
                        (state,),
                    ).fetchone()
                )
                for state in ("reserved", "committed", "rolled_back")
            }
            volumes = dict(
                db.execute("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS gigabytes FROM volumes").fetchone()
            )
            queued = db.execute("SELECT COUNT(*) FROM scheduler_queue").fetchone()[0]
            orphans = db.execute(
                "SELECT COUNT(*) FROM scheduler_queue WHERE volume_id NOT IN (SELECT id FROM volumes)"
            ).fetchone()[0]
        problems = []
        for resource in RESOURCES:
            u = usage[resource]
            if u["in_use"] != sums["committed"][resource]:
                problems.append(f"{resource} in use is {u['in_use']}, committed reservations hold {sums['committed'][resource]}")
            if u["reserved"] != sums["reserved"][resource]:
                problems.append(f"{resource} reserved is {u['reserved']}, open reservations hold {sums['reserved'][resource]}")
            if u["in_use"] + u["reserved"] > u["limit"]:
                problems.append(f"{resource} over its limit: {u['in_use']} + {u['reserved']} > {u['limit']}")
        if sums["reserved"]["n"]:
            problems.append(f"{sums['reserved']['n']} reservations neither committed nor rolled back")
        if volumes["n"] != usage["volumes"]["in_use"]:
            problems.append(f"{volumes['n']} volume records but {usage['volumes']['in_use']} volumes in use")
        if volumes["gigabytes"] != usage["gigabytes"]["in_use"]:
            problems.append(f"{volumes['gigabytes']} GiB of volume records but {usage['gigabytes']['in_use']} GiB in use")
        if queued != volumes["n"]:
            problems.append(f"{queued} scheduler requests for {volumes['n']} volume records")
        if orphans:
            problems.append(f"{orphans} scheduler requests for volumes that do not exist")
        return {
            "quota": usage,
            "reservations": {state: s["n"] for state, s in sums.items()},
            "volumes": volumes["n"],
            "scheduled": queued,
            "consistent": not problems,
            "problems": problems,
        }


def need(body: Dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(422, "invalid-request", f"`{name}` must be a {kind.__name__}", field=name)
    if kind is int and value < 0:
        raise ApiError(422, "invalid-request", f"`{name}` must not be negative", field=name)
    return value


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "volume-service/1.0"
    store: Store
    token: bytes
    quiet: bool

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        if not self.quiet:
            sys.stderr.write("volume-service: %s %s\n" % (self.address_string(), format % args))

    def body(self) -> bytes:
        """The request's body, sized or chunked, read whatever the method (so that a kept-alive
        connection stays in step)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raw = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                raw += self.rfile.read(size)
                self.rfile.readline()
        else:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return raw

    @staticmethod
    def parse(raw: bytes) -> Dict[str, Any]:
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise ApiError(400, "invalid-json", f"the body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "invalid-json", "the body must be a JSON object")
        return body

    def send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="volume-service"')
        self.end_headers()
        self.wfile.write(data)

    def authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token)

    def handle_call(self, method: str) -> None:
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        try:
            raw = self.body()
            body = self.parse(raw) if method in ("POST", "PUT") else {}
            if parts == ["healthz"] and method == "GET":
                return self.send(200, {"ok": True})
            if not self.authorized():
                raise ApiError(401, "unauthorized", "a valid bearer token is needed")
            if parts[:1] != ["v3"]:
                raise ApiError(404, "not-found", f"no such resource {url.path}")
            status, answer = self.route(method, parts[1:], query, body)
            self.send(status, answer)
        except ApiError as e:
            self.send(e.status, e.body)
        except Exception as e:  # a bug: say so, keep serving
            self.log_error("internal error: %r", e)
            self.send(500, {"error": "internal", "message": str(e)})

    def route(self, method: str, parts: list, query: Dict[str, list], body: Dict[str, Any]) -> Tuple[int, Any]:
        s = self.store
        match (method, parts):
            case ("GET", ["quota"]):
                return 200, s.quota()
            case ("POST", ["quota", "reserve"]):
                return s.reserve(need(body, "key", str), need(body, "volumes", int), need(body, "gigabytes", int))
            case ("POST", ["quota", "commit"]):
                return 200, s.commit(body)
            case ("POST", ["quota", "uncommit"]):
                return 200, s.uncommit(body)
            case ("POST", ["quota", "rollback"]):
                return 200, s.rollback(body)
            case ("GET", ["quota", "reservations"]):
                return 200, s.reservations()
            case ("POST", ["volumes"]):
                return s.create_volume(body)
            case ("GET", ["volumes"]):
                return 200, s.volumes()
            case ("GET", ["volumes", volume_id]):
                return 200, s.volume(volume_id)
            case ("DELETE", ["volumes", volume_id]):
                return 200, s.delete_volume("id", volume_id)
            case ("DELETE", ["volumes"]) if query.get("key"):
                return 200, s.delete_volume("key", query["key"][0])
            case ("POST", ["scheduler", "requests"]):
                return s.schedule(body)
            case ("GET", ["scheduler", "requests"]):
                return 200, s.scheduled()
            case ("DELETE", ["scheduler", "requests", volume_id]):
                return 200, s.unschedule(volume_id)
            case ("GET", ["ledger"]):
                return 200, s.ledger()
        raise ApiError(404 if method in ("GET", "DELETE") else 405, "not-found", f"no {method} /v3/{'/'.join(parts)}")

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self.handle_call("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.handle_call("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self.handle_call("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self.handle_call("DELETE")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # runs of a batch connect at once


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8776, help="0: let the system pick one")
    parser.add_argument("--port-file", type=Path, help="write the port here once listening")
    parser.add_argument("--db", default="volumes.db", help="SQLite file (created when missing)")
    parser.add_argument("--volumes", type=int, default=10, help="quota: volumes")
    parser.add_argument("--gigabytes", type=int, default=1000, help="quota: GiB")
    parser.add_argument("--unavailable-zone", action="append", default=[], help="refuses new volumes")
    parser.add_argument("--quiet", action="store_true", help="no line per request")
    args = parser.parse_args()
    token = os.environ.get("VOLUME_API_TOKEN", "")
    if len(token) < 8:
        print("service.py: set VOLUME_API_TOKEN to the API token (8 characters or more)", file=sys.stderr)
        return 2

    Handler.store = Store(args.db, {"volumes": args.volumes, "gigabytes": args.gigabytes}, tuple(args.unavailable_zone))
    Handler.token = token.encode()
    Handler.quiet = args.quiet
    server = Server((args.host, args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(args.port_file)
    print(f"volume-service: listening on http://{args.host}:{port}/v3", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
