//! A real MariaDB (or MySQL) server for the store tests, one per test, on
//! loopback: a fresh data directory (`mariadb-install-db`), `mariadbd` on a
//! free port without grant tables, and a database `chatd`. Stopped and
//! removed when dropped. A missing server fails the test
//! (scripts/test.sh installs `mariadb-server`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Scratch;
use crate::redis_harness::free_port;

pub struct Mariadb {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    /// More server options (TLS).
    options: Vec<String>,
}

/// A program on PATH or in /usr/sbin (where Debian puts the server).
fn program(name: &str) -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    Path::new("/usr/sbin").join(name)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    })
}

impl Mariadb {
    pub fn start() -> Mariadb {
        let server = program("mariadbd");
        assert!(
            server.exists(),
            "mariadbd is required (scripts/test.sh installs it: apt-get install mariadb-server)"
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("chatd-mariadb-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        // Its own temporary directory: bootstraps sharing /tmp collided on
        // their temporary tables' names when the tests ran in parallel.
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let user = if is_root() {
            "root".to_owned()
        } else {
            whoami()
        };
        let installed = Command::new(program("mariadb-install-db"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            // Passed on to the bootstrap server: see spawn_server.
            .arg("--innodb-use-native-aio=0")
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .output()
            .expect("mariadb-install-db runs");
        // (It failed once in a full run on a busy machine; what it said is
        // kept for the next time.)
        assert!(
            installed.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&installed.stdout),
            String::from_utf8_lossy(&installed.stderr)
        );
        let child = spawn_server(&dir, port, &user, &[]);
        let db = Mariadb {
            child,
            dir,
            port,
            options: Vec::new(),
        };
        db.wait_for("CREATE DATABASE chatd");
        db
    }

    /// Stops the server (`kill -9`: as a crash or a restart would drop every
    /// connection); its data stays.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on its data and port, once it answers.
    pub fn start_again(&mut self) {
        let user = if is_root() {
            "root".to_owned()
        } else {
            whoami()
        };
        self.child = spawn_server(&self.dir, self.port, &user, &self.options);
        self.wait_for("SELECT 1");
    }

    /// Restarts the server with TLS: this certificate and key (PEM), and
    /// `ca_pem` for its chain; clients may still connect without.
    pub fn enable_tls(&mut self, ca_pem: &str, cert_pem: &str, key_pem: &str) {
        let file = |name: &str, pem: &str| {
            let path = self.dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path.display().to_string()
        };
        self.options = vec![
            format!("--ssl-ca={}", file("ca.pem", ca_pem)),
            format!("--ssl-cert={}", file("server.pem", cert_pem)),
            format!("--ssl-key={}", file("server-key.pem", key_pem)),
        ];
        self.stop();
        self.start_again();
    }

    /// Runs `sql` once; it must succeed.
    fn execute(&self, sql: &str) {
        let out = self.client(sql).output().expect("mariadb runs");
        assert!(
            out.status.success(),
            "{sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The command-line client, to run `sql` on this server.
    fn client(&self, sql: &str) -> Command {
        let mut cmd = Command::new(program("mariadb"));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-P",
            &self.port.to_string(),
            "-u",
            "root",
        ])
        .args(["-e", sql])
        .stdin(Stdio::null());
        cmd
    }

    /// Runs `sql` until the server answers it (30 s at most).
    fn wait_for(&self, sql: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let done = self
                .client(sql)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/chatd", self.port)
    }
}

/// `mariadbd` on `dir`'s data, on loopback at `port`.
fn spawn_server(dir: &Path, port: u16, user: &str, options: &[String]) -> Child {
    Command::new(program("mariadbd"))
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg(format!("--socket={}", dir.join("sock").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .arg(format!("--log-error={}", dir.join("error.log").display()))
        .arg(format!("--tmpdir={}", dir.join("tmp").display()))
        .arg(format!("--port={port}"))
        .arg(format!("--user={user}"))
        .args([
            "--bind-address=127.0.0.1",
            "--skip-grant-tables",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",
            // Native AIO reserves kernel AIO slots per server, and the
            // machine's fs.aio-max-nr (65536) ran out with the tests in
            // parallel: bootstraps failed ("Installation of system tables
            // failed!"). Threads do the I/O instead.
            "--innodb-use-native-aio=0",
        ])
        .args(options)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mariadbd starts")
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "nobody".into())
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One MariaDB server for the whole run, started by the first test that
/// asks for a database (a bootstrap per test was most of the MySQL tests'
/// time). A test that stops, restarts or reconfigures its server starts
/// one of its own ([`Mariadb::start`]).
fn shared() -> &'static Mariadb {
    static SERVER: std::sync::OnceLock<Mariadb> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let db = Mariadb::start();
        // A static is never dropped: the server is stopped once this
        // process has ended, however it ended.
        crate::common::after_this_process(&format!(
            "kill -9 {}; rm -rf {}",
            db.child.id(),
            db.dir.display()
        ));
        db
    })
}

/// A database of its own for one test, on the run's shared server
/// (dropped when the test ends).
pub struct MyDatabase {
    port: u16,
    scratch: Scratch,
}

impl MyDatabase {
    pub fn create() -> MyDatabase {
        let server = shared();
        let scratch = Scratch::new();
        server.execute(&format!("CREATE DATABASE {}", scratch.name));
        MyDatabase {
            port: server.port,
            scratch,
        }
    }

    pub fn url(&self) -> String {
        let (port, name) = (self.port, &self.scratch.name);
        format!("mysql://root@127.0.0.1:{port}/{name}")
    }

    /// The test's own temp directory (files).
    pub fn dir(&self) -> &Path {
        self.scratch.dir()
    }
}

impl Drop for MyDatabase {
    fn drop(&mut self) {
        let name = &self.scratch.name;
        shared().execute(&format!("DROP DATABASE IF EXISTS {name}"));
    }
}
