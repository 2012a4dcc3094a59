//! A real PostgreSQL server on loopback for the store tests: its own data
//! directory, a free port, trust authentication, stopped when dropped.
//! (As root, the server runs as the `postgres` user, which refuses root.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::Scratch;
use crate::redis_harness::free_port;

pub struct Postgres {
    dir: PathBuf,
    pub port: u16,
    /// More `-c name=value` server options (TLS).
    options: String,
}

/// A PostgreSQL program: on PATH, or in Debian's versioned directory.
fn program(name: &str) -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join(name).is_file() {
                return dir.join(name);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's {name} is required (scripts/test.sh installs postgresql)")
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root.
fn run(program_path: &Path, args: &[&str]) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program_path);
        c
    } else {
        Command::new(program_path)
    };
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running a PostgreSQL program");
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        program_path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    pub fn start() -> Postgres {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("chatd-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            let chowned = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&dir)
                .status();
            assert!(chowned.is_ok_and(|s| s.success()), "chown the data dir");
        }
        let data = dir.join("data");
        let data = data.to_str().unwrap();
        run(
            &program("initdb"),
            &["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        let pg = Postgres {
            dir,
            port,
            options: String::new(),
        };
        pg.start_again();
        pg
    }

    /// Restarts the server with TLS on (`ssl=on`), this certificate and key
    /// (PEM); clients may still connect without.
    pub fn enable_tls(&mut self, cert_pem: &str, key_pem: &str) {
        let (cert, key) = (self.dir.join("server.crt"), self.dir.join("server.key"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        // PostgreSQL refuses a key others may read.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if is_root() {
            let chowned = Command::new("chown")
                .arg("postgres:postgres")
                .args([&cert, &key])
                .status();
            assert!(chowned.is_ok_and(|s| s.success()), "chown the key");
        }
        self.options = format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        );
        self.stop();
        self.start_again();
    }

    /// `pg_ctl stop -m fast`: every connection is dropped; the data stays.
    pub fn stop(&self) {
        let data = self.dir.join("data");
        run(
            &program("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    /// Starts the server on its data and port (and waits until it answers).
    pub fn start_again(&self) {
        let data = self.dir.join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.display(),
            self.options
        );
        let log = self.dir.join("log");
        run(
            &program("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let pg_ctl = program("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let _ = cmd
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One PostgreSQL server for the whole run, started by the first test that
/// asks for a database: starting one per test (`initdb`, then the server)
/// was most of the store tests' time. A test that stops, restarts or
/// reconfigures its server starts one of its own ([`Postgres::start`]).
fn shared() -> &'static Postgres {
    static SERVER: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let pg = Postgres::start();
        // A static is never dropped: the server is stopped once this
        // process has ended, however it ended.
        let stop = format!(
            "{} -D {} -m immediate stop; rm -rf {}",
            program("pg_ctl").display(),
            pg.dir.join("data").display(),
            pg.dir.display()
        );
        let stop = if is_root() {
            format!("runuser -u postgres -- {stop}")
        } else {
            stop
        };
        crate::common::after_this_process(&stop);
        pg
    })
}

/// A database of its own for one test, on the run's shared server
/// (dropped, with whatever is still connected, when the test ends).
pub struct PgDatabase {
    port: u16,
    scratch: Scratch,
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        let server = shared();
        let scratch = Scratch::new();
        psql(server.port, &format!("CREATE DATABASE {}", scratch.name));
        PgDatabase {
            port: server.port,
            scratch,
        }
    }

    pub fn url(&self) -> String {
        let (port, name) = (self.port, &self.scratch.name);
        format!("postgres://postgres@127.0.0.1:{port}/{name}")
    }

    /// The test's own temp directory (files).
    pub fn dir(&self) -> &Path {
        self.scratch.dir()
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = &self.scratch.name;
        psql(
            self.port,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
    }
}

/// Runs one statement on the server's `postgres` database.
fn psql(port: u16, sql: &str) {
    let port = port.to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        "-d",
        "postgres",
    ];
    run(
        &program("psql"),
        &[&args[..], &["-v", "ON_ERROR_STOP=1", "-q", "-c", sql]].concat(),
    );
}
