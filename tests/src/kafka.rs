//! A real Kafka-protocol broker (tansu) for tests.
//!
//! tansu keeps everything in memory, so each test process gets a fresh broker; tests share it
//! and keep apart by using their own topic and group names.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use eddy_kafka::KafkaConfig;

/// A tansu broker on a free loopback port, stopped when dropped.
pub struct Broker {
    port: u16,
    log: PathBuf,
    /// The watchdog shell; tansu is its child.
    child: Child,
    /// Closing this tells the watchdog to stop tansu. The watchdog also sees it close when this
    /// process dies without dropping the broker, as a shared one never is.
    stdin: Option<ChildStdin>,
}

impl Broker {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Broker {
        Broker::start_on(free_port())
    }

    /// Starts a broker on `port`, e.g. one a client was pointed at before Kafka was there.
    pub fn start_on(port: u16) -> Broker {
        let tansu = tansu();
        let dir = crate::repo_root().join("target/kafka-tests");
        std::fs::create_dir_all(&dir).expect("creating target/kafka-tests");
        let log = dir.join(format!("tansu-{port}.log"));
        let out = File::create(&log).expect("creating the broker log");
        let err = out.try_clone().expect("cloning the broker log");
        let url = format!("tcp://127.0.0.1:{port}");
        // A shell in between so tansu dies with this process: `read` returns when our end of the
        // pipe closes, however we exit, and the shell then kills tansu.
        let watchdog = r#"
            "$0" broker --listener-url "$1" --advertised-listener-url "$1" &
            child=$!
            read -r _ || true
            kill "$child" 2>/dev/null
            wait "$child" 2>/dev/null || true
        "#;
        let mut child = Command::new("sh")
            .args(["-c", watchdog])
            .arg(&tansu)
            .arg(&url)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", tansu.display()));
        let stdin = child.stdin.take();
        let broker = Broker {
            port,
            log,
            child,
            stdin,
        };
        broker.wait_ready(Duration::from_secs(20));
        broker
    }

    fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            // tansu prints "ready in …" once listening; a connection is the proof clients need.
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return;
            }
            if start.elapsed() > limit {
                panic!(
                    "tansu did not start on port {} within {limit:?}; its log ({}):\n{}",
                    self.port,
                    self.log.display(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's stdout and stderr so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// A client config for consumer group `group`, tuned so groups form in about a second.
    ///
    /// Checked against tansu 0.6.0: the group settles within one heartbeat after the join, and
    /// a consumer that leaves hands its partitions over at once.
    pub fn config(&self, group: &str) -> KafkaConfig {
        test_config(&self.bootstrap(), group)
    }
}

/// A test-friendly config for any bootstrap address, e.g. one where nothing listens.
pub fn test_config(bootstrap: &str, group: &str) -> KafkaConfig {
    KafkaConfig::new(bootstrap, group)
        .with("session.timeout.ms", "2000")
        .with("heartbeat.interval.ms", "100")
        .with("fetch.wait.max.ms", "50")
        .with("topic.metadata.refresh.interval.ms", "1000")
        .with("reconnect.backoff.ms", "50")
        .with("reconnect.backoff.max.ms", "500")
}

impl Drop for Broker {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.wait().is_err() {
            let _ = self.child.kill();
        }
    }
}

/// One broker for the whole test process, started on first use.
pub fn shared() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(Broker::start)
}

/// A name no other test in this run (or an earlier run on the same broker) uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free loopback port")
}

fn tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("EDDY_TANSU") {
        return PathBuf::from(path);
    }
    let local = crate::repo_root().join(".tools/bin/tansu");
    if local.exists() {
        return local;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("tansu");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("tansu not found: run ./setup.sh (or set EDDY_TANSU to a tansu binary)");
}
