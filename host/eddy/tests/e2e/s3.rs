//! An S3-compatible server for the tests: moto's, which `setup.sh` installs in `.tools/venv`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};

use crate::reaped::Reaped;

/// A moto server on a free port with one bucket, killed when dropped.
pub(crate) struct Moto {
    _server: Reaped,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The bucket it was started with.
    pub bucket: String,
}

impl Moto {
    /// Starts the server and creates `bucket`.
    pub(crate) fn start(bucket: &str) -> Moto {
        let bin = std::env::var_os("EDDY_MOTO").map_or_else(
            || eddy_tests::repo_root().join(".tools/venv/bin/moto_server"),
            std::path::PathBuf::from,
        );
        assert!(
            bin.exists(),
            "moto_server not found at {}: run ./setup.sh (or set EDDY_MOTO)",
            bin.display()
        );
        let port = eddy_tests::kafka::free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let moto = Moto {
            _server: Reaped::new(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
        };
        // Creates the bucket (moto takes an unsigned request) once the server listens.
        let started = Instant::now();
        loop {
            if let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) {
                write!(
                    conn,
                    "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                )
                .unwrap();
                let mut reply = String::new();
                conn.read_to_string(&mut reply).unwrap();
                assert!(
                    reply.starts_with("HTTP/1.1 200"),
                    "creating a bucket: {reply}"
                );
                return moto;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto_server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The environment that points AWS clients (Eddy's state store) at it.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// A client of its bucket.
    pub(crate) fn store(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(&self.bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .unwrap()
    }
}
