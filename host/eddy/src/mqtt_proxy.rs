//! `eddy mqtt-proxy`: an MQTT endpoint that lands device publishes in Kafka topics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use eddy_kafka::KafkaConfig;
use eddy_mqtt_endpoint::{Credentials, Endpoint, EndpointConfig, TlsConfig, TopicAs, TopicRule};

/// The limits, logins and TLS of an MQTT listener, as `eddy mqtt-proxy` and `eddy server
/// --mqtt-listen` take them (under different flag names).
pub(crate) struct Guard<'a> {
    pub(crate) max_connections: usize,
    pub(crate) connect_timeout_secs: u64,
    pub(crate) max_keep_alive: u16,
    pub(crate) max_unfinished_bytes: usize,
    pub(crate) max_packet_size: usize,
    pub(crate) password_file: Option<&'a Path>,
    /// The REST token, also taken as any MQTT user's password.
    pub(crate) token: Option<String>,
    pub(crate) tls_cert: Option<&'a Path>,
    pub(crate) tls_key: Option<&'a Path>,
}

impl Guard<'_> {
    /// Sets them on `config`; `flag` prefixes flag names in errors (`--` or `--mqtt-`).
    pub(crate) fn apply(self, config: &mut EndpointConfig, flag: &str) -> Result<()> {
        config.max_connections = self.max_connections;
        config.connect_timeout = Duration::from_secs(self.connect_timeout_secs);
        config.max_keep_alive = self.max_keep_alive;
        config.max_unfinished_bytes = self.max_unfinished_bytes;
        config.max_packet_size = self.max_packet_size;
        let mut credentials = Credentials::default();
        if let Some(file) = self.password_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            credentials = credentials
                .with_password_file(&text)
                .with_context(|| file.display().to_string())?;
            if credentials.is_empty() {
                bail!(
                    "{flag}password-file {}: no user:password line",
                    file.display()
                );
            }
        }
        if let Some(token) = self.token {
            credentials = credentials.with_token(token);
        }
        if !credentials.is_empty() {
            config.credentials = Some(Arc::new(credentials));
        }
        config.tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig::from_pem_files(cert, key)?),
            (None, None) => None,
            _ => bail!("{flag}tls-cert and {flag}tls-key go together"),
        };
        Ok(())
    }
}

/// The token in an `--auth-token-file`, trimmed; an empty file is an error.
pub(crate) fn read_token(file: &Path) -> Result<String> {
    let token = std::fs::read_to_string(file)
        .with_context(|| format!("reading {}", file.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        bail!("{} is empty", file.display());
    }
    Ok(token)
}

/// Arguments of `eddy mqtt-proxy`.
#[derive(Args, Debug)]
pub(crate) struct MqttProxyArgs {
    /// Address to accept MQTT 3.1.1 and 5 clients on.
    #[arg(long, default_value = "127.0.0.1:1883", env = "EDDY_MQTT_LISTEN")]
    listen: String,
    /// Kafka brokers (`host:port[,host:port…]`).
    #[arg(long, env = "EDDY_BOOTSTRAP_SERVERS")]
    bootstrap_servers: String,
    /// A topic rule `kafka_topic:regex` (the regex must match the whole MQTT topic); repeat for
    /// more, the first match wins. E.g. `--map 'temperature:.*temperature'`.
    #[arg(long = "map", value_name = "KAFKA_TOPIC:REGEX", required = true)]
    rules: Vec<String>,
    /// Put the MQTT topic in this record header instead of the record key.
    #[arg(long, value_name = "NAME")]
    topic_header: Option<String>,
    /// Unacknowledged QoS 1/2 publishes per connection before it is no longer read.
    #[arg(long, default_value_t = 64)]
    max_inflight: u16,
    /// A librdkafka producer property (repeatable), e.g. `linger.ms=1`.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE")]
    kafka_properties: Vec<String>,
    /// Seconds between counter lines on stderr (0: none).
    #[arg(long, default_value_t = 10)]
    stats_interval: u64,
    /// Connections open at once; further ones are closed before their CONNECT is read.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Seconds a new connection has to send CONNECT (TLS handshake included).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    connect_timeout: u64,
    /// The longest keep-alive granted, in seconds; a client asking for 0 or more gets this
    /// (0: no maximum).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    max_keep_alive: u16,
    /// Bytes of packets not yet read whole, across all connections; a connection that would
    /// take the total over it is closed.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    max_unfinished_bytes: usize,
    /// Largest MQTT packet taken; larger ones close the connection.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_packet_size: usize,
    /// A file of `user:password` lines; clients must log in as one of them (or with the
    /// --auth-token-file token as password).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// A file holding a token any user name may give as its MQTT password.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    /// TLS: the certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// TLS: the private key (PEM).
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
}

pub(crate) async fn run(args: &MqttProxyArgs) -> Result<()> {
    let mut kafka = KafkaConfig::new(args.bootstrap_servers.clone(), "eddy-mqtt-proxy");
    for property in &args.kafka_properties {
        let (k, v) = property
            .split_once('=')
            .with_context(|| format!("--kafka-property {property}: expected KEY=VALUE"))?;
        kafka = kafka.with(k, v);
    }
    let rules = args
        .rules
        .iter()
        .map(|r| r.parse::<TopicRule>())
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = EndpointConfig::new(args.listen.clone(), kafka, rules);
    config.max_inflight = args.max_inflight;
    let asked = crate::open_files::Caps {
        http: 0,
        mqtt: args.max_connections,
    };
    let (caps, lowered) = crate::open_files::fit(asked)?;
    if let Some(limit) = lowered {
        tracing::warn!(
            "`ulimit -n` allows {limit} open files, {} of them kept for the proxy itself: --max-connections lowered to {} (from {})",
            crate::open_files::RESERVED,
            caps.mqtt,
            asked.mqtt
        );
    }
    Guard {
        max_connections: caps.mqtt,
        connect_timeout_secs: args.connect_timeout,
        max_keep_alive: args.max_keep_alive,
        max_unfinished_bytes: args.max_unfinished_bytes,
        max_packet_size: args.max_packet_size,
        password_file: args.password_file.as_deref(),
        token: args
            .auth_token_file
            .as_deref()
            .map(read_token)
            .transpose()?,
        tls_cert: args.tls_cert.as_deref(),
        tls_key: args.tls_key.as_deref(),
    }
    .apply(&mut config, "--")?;
    if let Some(name) = &args.topic_header {
        config.topic_as = TopicAs::Header(name.clone());
    }
    let endpoint = Endpoint::start(config).await?;
    println!(
        "eddy mqtt-proxy: listening on {}{}",
        endpoint.local_addr(),
        if args.tls_cert.is_some() {
            " (TLS)"
        } else {
            ""
        }
    );
    let mut ticker = tokio::time::interval(Duration::from_secs(args.stats_interval.max(1)));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick(), if args.stats_interval > 0 => {
                eprintln!("eddy mqtt-proxy: {:?}", endpoint.stats());
            }
        }
    }
    let stats = endpoint.stats();
    endpoint.shutdown(Duration::from_secs(10)).await;
    eprintln!("eddy mqtt-proxy: stopped; {stats:?}");
    Ok(())
}
