//! Time to first byte of streamed completions, for `bench/load.sh`: starts N streams, one every
//! INTERVAL milliseconds, each on a new connection, and reads each one to its end. Prints one line
//! per stream: microseconds from connecting to the first byte of the response, and to its end.
//! Loopback only; bounded by N and a 10 s limit per stream.
//!
//! Usage: ttfb ADDR PATH BODY N INTERVAL_MS

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn one(addr: String, request: String) -> Option<(u128, u128)> {
    let start = Instant::now();
    let mut s = TcpStream::connect(&addr).await.ok()?;
    s.set_nodelay(true).ok()?;
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let n = s.read(&mut buf).await.ok()?;
    let first = start.elapsed().as_micros();
    if n == 0 || !buf.starts_with(b"HTTP/1.1 200") {
        return None;
    }
    while s.read(&mut buf).await.ok()? > 0 {}
    Some((first, start.elapsed().as_micros()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, path, body, n, interval] = args.as_slice() else {
        eprintln!("usage: ttfb ADDR PATH BODY N INTERVAL_MS");
        std::process::exit(2);
    };
    if !addr.starts_with("127.0.0.1:") {
        eprintln!("ttfb only targets 127.0.0.1");
        std::process::exit(2);
    }
    let (Ok(n), Ok(interval)) = (n.parse::<u32>(), interval.parse::<u64>()) else {
        eprintln!("N and INTERVAL_MS are numbers");
        std::process::exit(2);
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tick = tokio::time::interval(Duration::from_millis(interval));
    let mut tasks = Vec::new();
    for _ in 0..n {
        tick.tick().await;
        let limit = Duration::from_secs(10);
        tasks.push(tokio::spawn(tokio::time::timeout(limit, one(addr.clone(), request.clone()))));
    }
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(Some((first, total)))) => println!("{first} {total}"),
            _ => failed += 1,
        }
    }
    if failed > 0 {
        eprintln!("{failed} streams failed or timed out");
        std::process::exit(1);
    }
}
