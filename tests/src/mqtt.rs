//! A real MQTT broker (mosquitto) for tests.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use eddy_mqtt::rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// A mosquitto broker on a free local port, killed on drop.
pub struct Mosquitto {
    port: u16,
    dir: PathBuf,
    /// The shell that owns mosquitto; when its stdin closes it kills mosquitto and removes
    /// `dir`. That also happens when the test process exits without dropping this, as the
    /// broker of [`shared`] never is.
    guard: Child,
}

/// Where mosquitto is: `$EDDY_MOSQUITTO`, else on `PATH`, else Debian's `/usr/sbin`; `None` if
/// that is not a file.
pub fn mosquitto_binary() -> Option<PathBuf> {
    let binary = std::env::var_os("EDDY_MOSQUITTO")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join("mosquitto"))
                    .find(|candidate| candidate.is_file())
            })
        })
        .unwrap_or_else(|| "/usr/sbin/mosquitto".into());
    binary.is_file().then_some(binary)
}

impl Mosquitto {
    /// Starts a broker and waits until it accepts connections.
    pub fn start() -> Mosquitto {
        let binary = mosquitto_binary().expect("mosquitto not found: run ./setup.sh");
        Mosquitto::start_with(&binary)
    }

    /// Starts the mosquitto at `binary` (e.g. one a benchmark was given) and waits until it
    /// accepts connections.
    pub fn start_with(binary: &Path) -> Mosquitto {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = crate::repo_root()
            .join("target")
            .join("eddy-mosquitto")
            .join(format!(
                "{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
        // The port is free when asked but could be taken before mosquitto binds it: retry.
        for _ in 0..5 {
            fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free local port")
                .port();
            let config = dir.join("mosquitto.conf");
            // Long queues: tests publish bursts faster than a committing source drains them, and
            // mosquitto's default (1000 per client) silently drops the excess. Not 0 (no
            // limit): mosquitto 2.0 then ignores max_inflight_messages and sends everything
            // without waiting for acks, which is not how brokers behave by default.
            fs::write(
                &config,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                     max_queued_messages 1000000\nlog_type error\nlog_type warning\n\
                     log_type notice\nlog_type information\n"
                ),
            )
            .expect("writing mosquitto.conf");
            let log = dir.join("mosquitto.log");
            let log_file = fs::File::create(&log).expect("creating mosquitto.log");
            let mut guard = Command::new("sh")
                .arg("-c")
                .arg(r#""$0" -c "$1" & pid=$!; read -r _; kill $pid; wait $pid; rm -rf "$2""#)
                .arg(binary)
                .arg(&config)
                .arg(&dir)
                .stdin(Stdio::piped())
                .stdout(log_file.try_clone().expect("log file"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Mosquitto { port, dir, guard };
                }
                let text = fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Address already in use") {
                    break;
                }
                if text.contains("Error") || Instant::now() > deadline {
                    panic!("mosquitto did not start on port {port}:\n{text}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(guard.stdin.take());
            let _ = guard.wait();
        }
        panic!("no free port for mosquitto after 5 attempts");
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What mosquitto logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        drop(self.guard.stdin.take());
        let _ = self.guard.wait();
    }
}

/// One broker for the whole test process; tests sharing it use topics of their own.
pub fn shared() -> &'static Mosquitto {
    static BROKER: OnceLock<Mosquitto> = OnceLock::new();
    BROKER.get_or_init(Mosquitto::start)
}

/// Publishes `payloads` to `topic` in order at `qos` (0, 1 or 2) and returns once the broker
/// has acknowledged every one (QoS 1 and 2) or they were all written out (QoS 0).
pub async fn publish(url: &str, topic: &str, payloads: &[Vec<u8>], qos: u8) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let qos = match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        q => panic!("QoS {q}"),
    };
    let (host, port) = eddy_mqtt::parse_broker(url).unwrap_or_else(|e| panic!("{e}"));
    let id = format!(
        "eddy-test-publisher-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut options = MqttOptions::new(id, host, port);
    // mosquitto takes at most `max_inflight_messages` (20) unfinished QoS 2 publishes from a
    // client and silently discards the rest, so QoS 2 stays within that.
    let inflight = if qos == QoS::ExactlyOnce { 20 } else { 1000 };
    options
        .set_max_packet_size(1 << 24, 1 << 24)
        .set_inflight(inflight);
    let (client, mut events) = AsyncClient::new(options, 1024);
    let owned = payloads.to_vec();
    let topic = topic.to_string();
    let sender = tokio::spawn(async move {
        for payload in owned {
            client
                .publish(topic.clone(), qos, false, payload)
                .await
                .expect("queueing a publish");
        }
        client
    });
    let deadline = Duration::from_secs(60);
    let mut done = 0;
    tokio::time::timeout(deadline, async {
        while done < payloads.len() {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => done += 1,
                Ok(Event::Incoming(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => done += 1,
                Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => done += 1,
                Ok(_) => {}
                Err(e) => panic!("publishing to {url}: {e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "publishing to {url}: {done} of {} acknowledged",
            payloads.len()
        )
    });
    let client = sender.await.expect("publishing task");
    client.disconnect().await.expect("queueing a disconnect");
    // Polled until the DISCONNECT is written, so QoS 0 publishes before it reach the broker.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}
