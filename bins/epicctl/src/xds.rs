//! `epicctl xds`: inspect a running xDS control plane (epic-xds admin endpoint).
//!
//! Talks plain HTTP/1.1 to the endpoint that `epic_xds::serve_admin` serves
//! and renders its `GET /status` JSON.

use std::error::Error;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

/// xDS subcommands.
#[derive(Debug, Subcommand)]
pub enum XdsCommand {
    /// Show nodes, their streams, acked versions, and pending/nacked revisions.
    Status {
        /// Admin endpoint address (`host:port`) of the xDS server.
        #[arg(long)]
        server: String,
        /// Print the raw JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `epicctl xds` subcommand.
pub fn run(cmd: XdsCommand) -> Result<(), Box<dyn Error>> {
    match cmd {
        XdsCommand::Status { server, json } => {
            let body = get(&server, "/status")?;
            let status: Value = serde_json::from_str(&body)
                .map_err(|e| format!("{server}: /status is not JSON: {e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render(&status));
            }
            Ok(())
        }
    }
}

/// `GET path` over HTTP/1.1; the body of a 200 response.
fn get(server: &str, path: &str) -> Result<String, Box<dyn Error>> {
    let timeout = Duration::from_secs(5);
    let addr = server
        .to_socket_addrs()
        .map_err(|e| format!("{server}: cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{server}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("{server}: cannot connect: {e}"))?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {server}\r\nconnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("{server}: read failed: {e}"))?;
    let text = String::from_utf8(raw).map_err(|_| format!("{server}: reply is not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{server}: malformed HTTP reply"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        return Err(format!("{server}{path}: {status}").into());
    }
    Ok(body.to_string())
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Human summary of the status JSON.
fn render(status: &Value) -> String {
    let mut out = String::new();
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    if nodes.is_empty() {
        out.push_str("no nodes\n");
    }
    for node in &nodes {
        let _ = writeln!(
            out,
            "node {}  revision {}  version {}",
            s(&node["node"]),
            s(&node["current_revision"]),
            s(&node["current_version"])
        );
        let streams = node["streams"].as_array().cloned().unwrap_or_default();
        if streams.is_empty() {
            out.push_str("  no streams\n");
        }
        for st in &streams {
            let acked = st["acked"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", s(v)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  stream {} ({})  applied revision {}  nacks {}  acked: {}",
                s(&st["id"]),
                s(&st["kind"]),
                s(&st["applied_revision"]),
                s(&st["nacks"]),
                if acked.is_empty() { "-".into() } else { acked }
            );
        }
        for rev in node["revisions"].as_array().cloned().unwrap_or_default() {
            let mut line = format!(
                "  revision {}  {}  {}",
                s(&rev["number"]),
                s(&rev["version"]),
                s(&rev["state"])
            );
            if let Some(from) = rev["rollback_of"].as_u64() {
                let _ = write!(line, "  (rollback of {from})");
            }
            let _ = writeln!(out, "{line}");
            for nack in rev["nacks"].as_array().cloned().unwrap_or_default() {
                let _ = writeln!(
                    out,
                    "    nacked by stream {} ({}): {}",
                    s(&nack["stream"]),
                    s(&nack["resource_type"]),
                    s(&nack["error"])
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_streams_and_nacked_revisions() {
        let status = serde_json::json!({"nodes": [{
            "node": "t/g/p", "current_revision": 2, "current_version": "abcd",
            "streams": [{"id": 1, "kind": "sotw", "connected_at": 0,
                         "acked": {"cluster": "v1"}, "applied_revision": 1,
                         "responses": {}, "nacks": 1}],
            "revisions": [
                {"number": 1, "version": "v1", "state": "acked", "acked_by": [1],
                 "nacks": [], "rollback_of": null, "set_at": 0},
                {"number": 2, "version": "v2", "state": "nacked", "acked_by": [],
                 "nacks": [{"stream": 1, "resource_type": "listener", "version": "x",
                            "error": "bad listener"}], "rollback_of": null, "set_at": 0}]
        }]});
        let text = render(&status);
        assert!(text.contains("node t/g/p  revision 2  version abcd"));
        assert!(text.contains("stream 1 (sotw)  applied revision 1  nacks 1  acked: cluster=v1"));
        assert!(text.contains("revision 2  v2  nacked"));
        assert!(text.contains("nacked by stream 1 (listener): bad listener"));
        assert_eq!(render(&serde_json::json!({"nodes": []})), "no nodes\n");
    }
}
