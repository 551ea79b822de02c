//! A delay proxy on loopback in front of the SQS server, so the bench can measure the worker
//! at AWS-like SQS latency (`BENCH_SQS_LATENCY_MS`): on loopback every SQS call takes
//! microseconds, on AWS milliseconds, and a worker tuned on loopback holds too few calls open
//! for the real thing.
//!
//! Each connection is piped both ways with every chunk held back by the delay from the moment
//! it was read (a timestamped queue per direction, not a sleep per read), so a request and its
//! response each arrive `delay` late while many requests still overlap: latency is added, the
//! bandwidth is not cut. Each queue is bounded, so a slow side is back-pressured, not buffered
//! without limit.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Chunks in flight per direction of one connection before the reader waits.
const QUEUED_CHUNKS: usize = 64;

/// A running proxy; stops when dropped.
pub struct DelayProxy {
    /// `http://127.0.0.1:PORT`: give this to clients instead of the server's endpoint.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listen on a free loopback port and forward to `upstream` (an `http://host:port` endpoint),
/// adding `delay` each way.
pub async fn start(upstream: &str, delay: Duration) -> Result<DelayProxy> {
    let target: SocketAddr = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| {
            format!("the delay proxy needs an http://IP:PORT endpoint, not {upstream}")
        })?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(server) = TcpStream::connect(target).await {
                    pipe(client, server, delay).await;
                }
            });
        }
    });
    Ok(DelayProxy { url, task })
}

/// Both directions of one connection, until either side closes.
async fn pipe(client: TcpStream, server: TcpStream, delay: Duration) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = one_way(client_read, server_write, delay) => {}
        _ = one_way(server_read, client_write, delay) => {}
    }
}

/// Read chunks as they come, write each `delay` after it was read.
async fn one_way(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUED_CHUNKS);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    // The writer ends after the reader's last chunk is written (the channel closes).
    let _ = tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The proxy adds its delay each way and carries the bytes unchanged, both directions.
    #[tokio::test]
    async fn a_round_trip_through_the_proxy_takes_twice_the_delay() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let proxy = start(&format!("http://{echo_addr}"), Duration::from_millis(40))
            .await
            .unwrap();
        let mut c = TcpStream::connect(proxy.url.trim_start_matches("http://"))
            .await
            .unwrap();
        let started = std::time::Instant::now();
        c.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut back))
            .await
            .expect("echo within 5 s")
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(&back, b"hello");
        assert!(elapsed >= Duration::from_millis(80), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    }
}
