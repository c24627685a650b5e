"""HTTP over the standard library: one connection per request (``http.client``)."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlencode, urlsplit

from .errors import ConnectionFailed, error_for

__all__ = ["Transport"]

_UNSET = object()


class Transport:
    """Sends requests to one service: its base URL, the bearer token, a default timeout."""

    def __init__(
        self,
        base_url: str,
        *,
        token: Optional[str],
        timeout: Optional[float],
        user_agent: str,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"the service URL may not have a query or fragment: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port
        self.prefix = parts.path.rstrip("/")
        self.token = token.strip() if token else None
        self.timeout = timeout
        self.user_agent = user_agent
        self.ssl_context = ssl_context

    def connect(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        """A new, not yet connected, connection to the service."""
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def headers(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        """The headers of every request: the token when there is one, and ``extra``."""
        headers = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    def target(self, path: str, query: Optional[Mapping[str, Any]] = None) -> str:
        """The request target of ``path`` (below the base URL's path) and ``query``."""
        target = self.prefix + path
        if query:
            pairs = [(k, str(v)) for k, v in query.items() if v is not None]
            if pairs:
                target += "?" + urlencode(pairs)
        return target

    def open(
        self,
        method: str,
        path: str,
        *,
        body: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        query: Optional[Mapping[str, Any]] = None,
        timeout: Any = _UNSET,
    ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends a request and returns the connection and the answer, its body unread; an
        error status raises the typed :class:`~flowhost_client.ApiError` (the connection is
        then closed). The caller closes the connection."""
        conn = self.connect(self.timeout if timeout is _UNSET else timeout)
        target = self.target(path, query)
        all_headers = self.headers(headers)
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")
        try:
            try:
                conn.request(method, target, body=body, headers=all_headers)
            except (BrokenPipeError, ConnectionResetError) as error:
                # The service may answer before reading the whole body (a 413 for a body over
                # its cap) and close the connection: its answer is still to be read.
                try:
                    response = conn.getresponse()
                except (OSError, http.client.HTTPException):
                    raise ConnectionFailed(f"{method} {target}: {error}") from error
            else:
                response = conn.getresponse()
        except ConnectionFailed:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as error:
            conn.close()
            raise ConnectionFailed(f"{method} {self.base_url}{target}: {error}") from error
        if response.status >= 400:
            try:
                data = response.read()
            except (OSError, http.client.HTTPException):
                data = b""
            finally:
                conn.close()
            raise error_for(response.status, response.reason, decode(data), method, target)
        return conn, response

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = _UNSET,
        query: Optional[Mapping[str, Any]] = None,
    ) -> Tuple[Any, http.client.HTTPResponse]:
        """Sends a request with an optional JSON body; returns the decoded JSON answer (or
        text, or ``None`` when empty) and the response (for its status and headers)."""
        body = None
        if json_body is not _UNSET:
            body = json.dumps(json_body, allow_nan=False, separators=(",", ":")).encode()
        conn, response = self.open(method, path, body=body, query=query)
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise ConnectionFailed(f"{method} {path}: {error}") from error
        finally:
            conn.close()
        return decode(data), response


def decode(data: bytes) -> Any:
    """A body as JSON when it is JSON, as text otherwise, ``None`` when empty."""
    if not data.strip():
        return None
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")
