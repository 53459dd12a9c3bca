//! A small JSON admin endpoint over HTTP/1.1: `GET /status` shows [`CacheStatus`](crate::CacheStatus).

use std::future::Future;
use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cache::SnapshotCache;

/// Largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;

/// Serves `GET /status` (JSON) and `GET /healthz` on `listener` until `signal` completes.
pub async fn serve_admin(
    listener: TcpListener,
    cache: SnapshotCache,
    signal: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => return Ok(()),
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let cache = cache.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &cache).await {
                        tracing::debug!(%peer, error = %e, "admin request failed");
                    }
                });
            }
        }
    }
}

async fn handle(mut stream: TcpStream, cache: &SnapshotCache) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/status" | "/") => {
            let json = serde_json::to_vec_pretty(&cache.status()).map_err(io::Error::other)?;
            ("200 OK", "application/json", json)
        }
        ("GET", "/healthz") => ("200 OK", "text/plain", b"ok\n".to_vec()),
        ("GET", _) => ("404 Not Found", "text/plain", b"not found\n".to_vec()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            b"method not allowed\n".to_vec(),
        ),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}
