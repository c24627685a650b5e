"""Fixtures: a real ``flowhost serve`` on a free loopback port, over a temporary flows folder
of flow files made of the repository's test plugins (``probe``) and the volume-create
example's tasks.

``FLOWHOST_BIN`` names the binary (default ``<repo>/target/debug/flowhost``),
``FLOWHOST_PLUGINS`` the folder of built plugins (default
``<repo>/plugins/target/wasm32-wasip2/release``; built by ``cd plugins && cargo build
--release --locked``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pytest

from flowhost_client import Client

REPO = Path(__file__).resolve().parents[3]
FLOWHOST_BIN = Path(os.environ.get("FLOWHOST_BIN") or REPO / "target" / "debug" / "flowhost")
PLUGINS = Path(
    os.environ.get("FLOWHOST_PLUGINS") or REPO / "plugins" / "target" / "wasm32-wasip2" / "release"
)
EXAMPLE = REPO / "examples" / "volume-create"
TOKEN = "py-client-token-0123456789abcdef"

_names = itertools.count(1)


def plugin(name: str) -> Path:
    """A built plugin of the repository."""
    path = PLUGINS / f"{name}.wasm"
    if not path.is_file():
        pytest.fail(
            f"plugin {path} was not built: cd plugins && cargo build --release --locked",
            pytrace=False,
        )
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _toml(value: object) -> str:
    """A JSON-like value as TOML (inline tables for objects)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Path):
        return json.dumps(str(value))
    return json.dumps(value)


class Served:
    """A ``flowhost serve`` process: started on a free loopback port, ready once
    ``/healthz`` answers, killed by :meth:`stop`."""

    def __init__(
        self,
        flows: Path,
        db: Path,
        home: Path,
        log: Path,
        token_file: Optional[Path] = None,
    ) -> None:
        self.flows, self.db, self.home, self.log_path = flows, db, home, log
        self.token_file = token_file
        self.process: Optional[subprocess.Popen] = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: Optional[str] = None, **kw) -> Client:
        return Client(self.url, token=token, **kw)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> "Served":
        if not FLOWHOST_BIN.is_file():
            pytest.fail(
                f"no flowhost binary at {FLOWHOST_BIN}: build it (cargo build) or set FLOWHOST_BIN",
                pytrace=False,
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWHOST_")}
        env.update(
            HOME=str(self.home),
            XDG_DATA_HOME=str(self.home / ".local" / "share"),
            XDG_CACHE_HOME=str(self.home / ".cache"),
            NO_COLOR="1",
        )
        for attempt in range(5):
            self.port = _free_port()
            args = [
                str(FLOWHOST_BIN),
                "serve",
                "--flows",
                str(self.flows),
                "--db",
                str(self.db),
                "--listen",
                f"127.0.0.1:{self.port}",
            ]
            if self.token_file is not None:
                args += ["--token-file", str(self.token_file)]
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                    cwd=self.home,
                )
            if self._wait_healthy():
                return self
            if "cannot listen" not in self.log():
                break
        log = self.log()
        self.stop()
        pytest.fail(f"flowhost serve did not become healthy; its log:\n{log}", pytrace=False)

    def _wait_healthy(self, timeout: float = 60.0) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Stops the server: SIGTERM, then SIGKILL when it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            pass
        process.kill()
        process.wait(timeout=10)

    def crash(self) -> None:
        """Kills the server at once (SIGKILL), leaving its runs where their journal stands."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)


class Probes:
    """A flow of journaling probes in a flows folder: its served name, and the folders the
    probes see (``/journal`` for their journal, ``/signal`` for the go signal)."""

    def __init__(self, name: str, flow_name: str, path: Path, journal: Path, signal_dir: Path):
        self.name, self.flow_name, self.path = name, flow_name, path
        self.journal, self.signal = journal, signal_dir

    def calls(self) -> List[Tuple[str, str]]:
        """Every probe call so far: (call, label)."""
        path = self.journal / "calls.jsonl"
        if not path.exists():
            return []
        calls = []
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                calls.append((entry["call"], entry["label"]))
        return calls

    def count(self, call: str, label: str) -> int:
        return sum(1 for c in self.calls() if c == (call, label))

    def wait_for(self, call: str, label: str, timeout: float = 60.0) -> None:
        """Waits until the journal shows ``call`` of ``label`` (the probe journals before it
        blocks on the signal)."""
        deadline = time.monotonic() + timeout
        while self.count(call, label) == 0:
            assert time.monotonic() < deadline, f"`{label}` never reached {call}: {self.calls()}"
            time.sleep(0.02)

    def release(self) -> None:
        """Lets every probe waiting on ``/signal/go`` go on."""
        (self.signal / "go").write_text("go")


class Flows:
    """A flows folder to serve, and the folders its flows' tasks write to."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "flows"
        self.work = root / "work"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)

    def probes(
        self,
        prefix: str,
        tasks: Sequence[Tuple[str, Dict[str, object]]] = (("a", {}), ("b", {}), ("c", {})),
        *,
        store: Optional[Dict[str, object]] = None,
    ) -> Probes:
        """Writes a flow of probes named by ``tasks`` (name, extra config), each journaling
        and passing the previous one's result on (task ``x`` provides ``x_out``); the first
        reads ``seed``. Its file name (and flow name) is unique: ``PREFIX_N``."""
        name = f"{re.sub(r'[^A-Za-z0-9_]', '_', prefix)}_{next(_names)}"
        journal = self.work / name / "journal"
        signal_dir = self.work / name / "signal"
        journal.mkdir(parents=True)
        signal_dir.mkdir(parents=True)
        text = f'name = "{name}_flow"\n[store]\n'
        for key, value in (store if store is not None else {"seed": 1}).items():
            text += f"{key} = {_toml(value)}\n"
        source = "seed"
        for task, extra in tasks:
            config: Dict[str, object] = {"label": task, "journal": True}
            config.update(extra)
            dirs = [
                {"host": journal, "guest": "/journal", "mode": "rw"},
                {"host": signal_dir, "guest": "/signal"},
            ]
            text += (
                f'\n[[task]]\nname = "{task}"\nplugin = {_toml(plugin("probe"))}\n'
                f'rebind = {{ value = "{source}" }}\nprovides = ["{task}_out"]\n'
                f"config = {_toml(config)}\ndirs = {_toml(dirs)}\n"
            )
            source = f"{task}_out"
        path = self.dir / f"{name}.toml"
        path.write_text(text)
        return Probes(name, f"{name}_flow", path, journal, signal_dir)

    def volume_create(self, name: str = "volume_create") -> Path:
        """The volume-create example's ``flow.toml`` as ``NAME.toml``, its plugins named by
        absolute path, with a fresh ``state`` folder of its own."""
        text = (EXAMPLE / "flow.toml").read_text()
        for match in set(re.findall(r'"\.\./\.\./plugins/target/wasm32-wasip2/release/(\w+)\.wasm"', text)):
            text = text.replace(
                f'"../../plugins/target/wasm32-wasip2/release/{match}.wasm"',
                _toml(plugin(match)),
            )
        state = self.work / f"{name}-state"
        state.mkdir(parents=True, exist_ok=True)
        text = text.replace('host = "state"', f"host = {_toml(state)}")
        path = self.dir / f"{name}.toml"
        path.write_text(text)
        return path


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home folder for every server of the session: they share the compiled-plugin
    cache, and no server touches the real user's."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory, home: Path) -> Iterator:
    """Starts servers: ``serve(flows, token=False, db=None)``; every one is stopped at the end
    of the session."""
    started: List[Served] = []

    def start(flows: Flows, *, token: bool = False, db: Optional[Path] = None) -> Served:
        root = tmp_path_factory.mktemp("serve")
        token_file = None
        if token:
            token_file = root / "token"
            token_file.write_text(TOKEN + "\n")
        server = Served(
            flows.dir,
            db if db is not None else root / "runs.db",
            home,
            root / "serve.log",
            token_file,
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def flows(tmp_path_factory: pytest.TempPathFactory) -> Flows:
    """The flows folder of the session's shared server (tests add their own flow files)."""
    flows = Flows(tmp_path_factory.mktemp("shared"))
    flows.volume_create()
    return flows


@pytest.fixture(scope="session")
def server(serve, flows: Flows) -> Served:
    """The session's server without a token."""
    return serve(flows)


@pytest.fixture
def fh(server: Served) -> Client:
    """A client of the session's server."""
    return server.client()


@pytest.fixture(scope="session")
def token_flows(tmp_path_factory: pytest.TempPathFactory) -> Flows:
    return Flows(tmp_path_factory.mktemp("token"))


@pytest.fixture(scope="session")
def token_server(serve, token_flows: Flows) -> Served:
    """A server with a token file (its token is ``TOKEN``)."""
    return serve(token_flows, token=True)


@pytest.fixture
def new_flows(tmp_path: Path) -> Flows:
    """A flows folder of this test's own."""
    return Flows(tmp_path)


def flowhost(*args: str, cwd: Optional[Path] = None, home: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Runs the flowhost binary to its end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWHOST_")}
    if home is not None:
        env["HOME"] = str(home)
        env["XDG_DATA_HOME"] = str(home / ".local" / "share")
        env["XDG_CACHE_HOME"] = str(home / ".cache")
    return subprocess.run(
        [str(FLOWHOST_BIN), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


__all__ = ["Flows", "Probes", "Served", "TOKEN", "REPO", "EXAMPLE", "flowhost", "plugin"]
