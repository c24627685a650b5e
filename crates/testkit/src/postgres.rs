//! A throwaway PostgreSQL server for the tests: initialised from the system's binaries into a
//! temporary folder, listening on 127.0.0.1 at a free port (and a Unix socket in that
//! folder), stopped and removed on drop. As root it runs as the `postgres` user, since the
//! server refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL server of the test's own.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    listen: String,
    server: Option<Child>,
}

impl Postgres {
    /// Initialises and starts a server on 127.0.0.1.
    pub fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// Initialises and starts a server listening on `listen` (PostgreSQL's
    /// `listen_addresses`, e.g. `127.0.0.1,10.77.0.1`).
    pub fn start_on(listen: &str) -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("a folder for the server");
        if crate::is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the server's folder to postgres");
        }
        let output = user_command(&bin.join("initdb"))
            .args([
                "--no-sync",
                "--auth=trust",
                "--username=flowhost",
                "--encoding=UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(dir.path().join("data"))
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // Workers in network namespaces of their own reach the server over a veth link.
        let hba = dir.path().join("data/pg_hba.conf");
        let mut rules = std::fs::read_to_string(&hba).unwrap();
        rules.push_str("host all all samenet trust\n");
        std::fs::write(&hba, rules).unwrap();
        let port = free_port();
        let mut pg = Self {
            bin,
            dir,
            port,
            listen: listen.to_owned(),
            server: None,
        };
        pg.launch();
        pg
    }

    /// The URL flowhost is given: `postgres://flowhost@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://flowhost@127.0.0.1:{}/postgres", self.port)
    }

    /// The URL at another of the addresses the server listens on.
    pub fn url_at(&self, host: &str) -> String {
        format!("postgres://flowhost@{host}:{}/postgres", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL with `psql` and returns its unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(self.url())
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The whole database as `pg_dump` writes it (schema and data, plain SQL): what a
    /// backup of the run database holds.
    pub fn dump(&self) -> String {
        let output = Command::new(self.bin.join("pg_dump"))
            .args(["--no-owner", "--dbname"])
            .arg(self.url())
            .output()
            .expect("run pg_dump");
        assert!(
            output.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Stops the server (fast shutdown: clients are disconnected) and waits for it to end.
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = Command::new("kill")
                .args(["-INT", &server.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while server.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = server.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the stopped server again, on the same port, with its data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut server = user_command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                &format!("listen_addresses={}", self.listen),
            ])
            .args([
                "-c",
                &format!("unix_socket_directories={}", self.dir.path().display()),
            ])
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if let Some(status) = server.try_wait().unwrap() {
                panic!("postgres exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.server = Some(server);
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The newest PostgreSQL's binaries: Debian's `/usr/lib/postgresql/N/bin`, else `pg_config
/// --bindir`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file())
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    let output = Command::new("pg_config").arg("--bindir").output();
    let bin = output
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    bin.filter(|b| b.join("initdb").is_file())
        .expect("PostgreSQL's server binaries (initdb, postgres) are missing: install Debian's `postgresql` package")
}

/// `program`, run as the `postgres` user when we are root (the server refuses root).
fn user_command(program: &Path) -> Command {
    if crate::is_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--clear-groups",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `flowhost worker` options under which a lease lapses a second after its holder stops
/// renewing it, and a run is claimed again within a second or two.
pub const SHORT_LEASE: [&str; 6] = [
    "--lease-ttl",
    "1s",
    "--heartbeat",
    "200ms",
    "--poll",
    "200ms",
];
