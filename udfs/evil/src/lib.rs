//! Hostile and broken UDFs; the host's tests assert it survives each of them.
use eddy_udf::udf;

/// Panics when `x` is negative (a trap in wasm), else returns `x`.
#[udf]
fn panic_if_negative(x: f64) -> f64 {
    if x < 0.0 {
        panic!("negative input {x}");
    }
    x
}

/// Never returns.
#[udf]
fn spin(x: f64) -> f64 {
    let mut n = x;
    loop {
        n = std::hint::black_box(n + 1.0);
    }
}

/// Allocates until memory runs out.
#[udf]
fn hog(x: f64) -> f64 {
    let mut keep: Vec<Vec<u8>> = Vec::new();
    loop {
        keep.push(vec![1; 16 << 20]);
        std::hint::black_box(&keep);
        if x.is_nan() {
            return keep.len() as f64;
        }
    }
}

/// Logs its input to the host log and returns it.
#[udf]
fn chatty(x: f64) -> f64 {
    eddy_udf::log::info(&format!("chatty saw {x}"));
    x
}

/// Recurses `depth` levels deep and returns `depth`: a large depth exhausts the stack.
#[udf]
fn recurse(depth: i64) -> i64 {
    fn down(n: i64) -> i64 {
        if n <= 0 {
            return 0;
        }
        // Not a tail call, and opaque to the optimiser, so every level keeps a frame.
        std::hint::black_box(down(std::hint::black_box(n - 1))) + 1
    }
    down(depth)
}

/// Prints 10,000 lines to stdout for every row, then returns `x`.
#[udf]
fn noisy(x: f64) -> f64 {
    for i in 0..10_000 {
        println!("noisy line {i} for {x}: the host must bound this, not store it all");
    }
    x
}

/// Tries to read `/etc/passwd`; returns what happened.
#[udf]
fn read_passwd(_x: i64) -> String {
    match std::fs::read("/etc/passwd") {
        Ok(bytes) => format!("read {} bytes", bytes.len()),
        Err(e) => format!("denied: {e}"),
    }
}

/// The number of environment variables plus program arguments the guest can see.
#[udf]
fn env_count(_x: i64) -> i64 {
    (std::env::vars_os().count() + std::env::args_os().count()) as i64
}

/// Tries to open a TCP connection to `127.0.0.1:80`; returns what happened.
#[udf]
fn connect_tcp(_x: i64) -> String {
    match std::net::TcpStream::connect("127.0.0.1:80") {
        Ok(_) => "connected".to_string(),
        Err(e) => format!("denied: {e}"),
    }
}

/// Milliseconds since the Unix epoch by the guest's wall clock; `immutable`, yet it is not.
#[udf]
fn wall_clock_ms(_x: i64) -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(-1, |d| d.as_millis() as i64)
}

/// Sleeps `millis` milliseconds, then returns them.
#[udf]
fn sleepy(millis: i64) -> i64 {
    std::thread::sleep(std::time::Duration::from_millis(millis.max(0) as u64));
    millis
}

eddy_udf::export!(
    panic_if_negative,
    spin,
    hog,
    chatty,
    recurse,
    noisy,
    read_passwd,
    env_count,
    connect_tcp,
    wall_clock_ms,
    sleepy
);
