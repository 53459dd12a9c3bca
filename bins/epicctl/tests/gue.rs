//! `epicctl gue` end to end: encode, decode, errors and exit codes.

use std::process::{Command, Output};

fn epicctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_epicctl"))
        .args(args)
        .output()
        .expect("epicctl runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn encode_data_then_decode() {
    let o = epicctl(&[
        "gue",
        "encode",
        "data",
        "--tunnel",
        "42",
        "--proto",
        "ipv6",
        "--payload",
        "6000",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "012980000000002a6000");
    let o = epicctl(&["gue", "decode", "012980000000002a6000"]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["variant"], 0);
    assert_eq!(v["c"], false);
    assert_eq!(v["hlen"], 1);
    assert_eq!(v["proto"], 41);
    assert_eq!(v["flags"], "0x8000");
    assert_eq!(v["tunnel_id"], 42);
    assert_eq!(v["payload_len"], 2);
    assert_eq!(v["profile"], "standard");
}

#[test]
fn encode_hello_then_decode() {
    let key = "11".repeat(32);
    let o = epicctl(&[
        "gue",
        "encode",
        "hello",
        "--tunnel",
        "7",
        "--key-hex",
        &key,
        "--tenant",
        "3",
        "--node",
        "worker-1",
        "--counter",
        "1000",
    ]);
    assert!(o.status.success(), "{o:?}");
    let hex = stdout(&o);
    assert_eq!(hex.len(), 112);
    assert!(hex.starts_with("2580c00000000007"), "{hex}");
    let o = epicctl(&["gue", "decode", &hex]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["message"].as_str(), v["ctype"].as_u64()),
        (Some("control"), Some(0x80))
    );
    assert_eq!(v["hello"]["counter"], 1000);
    assert_eq!(v["hello"]["tenant"], 3);
}

#[test]
fn legacy_only_when_asked() {
    let o = epicctl(&[
        "gue",
        "encode",
        "data",
        "--tunnel",
        "5",
        "--profile",
        "epic-legacy",
    ]);
    assert_eq!(stdout(&o), "0504a00000000005");
    let o = epicctl(&["gue", "decode", "2601a00000000005"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("epic-legacy"),
        "{o:?}"
    );
    let o = epicctl(&[
        "gue",
        "decode",
        "--profile",
        "epic-legacy",
        "2601a00000000005",
    ]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["profile"].as_str(), v["tunnel_id"].as_u64()),
        (Some("epic-legacy"), Some(5))
    );
}

#[test]
fn bad_input_fails_with_the_error() {
    for (hex, needle) in [
        ("0104", "truncated"),
        (
            "00048000",
            "Hlen mismatch: header announces 0 words, flags need 1",
        ),
        ("45000014", "version 1"),
        ("zz", "invalid hex"),
    ] {
        let o = epicctl(&["gue", "decode", hex]);
        assert!(!o.status.success(), "{hex}: {o:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{hex}: {err}");
    }
}

#[test]
fn decode_with_outer_headers() {
    // IPv4 192.0.2.1 -> 192.0.2.2, UDP 50000 -> 6080, GUE data tunnel 1, 1 byte of payload.
    let gue = "01048000000000014f";
    let udp_len = 8 + gue.len() / 2;
    let total = 20 + udp_len;
    let header: Vec<u8> = {
        let mut h = vec![
            0x45,
            0,
            0,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            17,
            0,
            0,
            192,
            0,
            2,
            1,
            192,
            0,
            2,
            2,
        ];
        let mut sum: u32 = h
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        let c = !(sum as u16);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    };
    let hex: String = header
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        + &format!("c35017c0{udp_len:04x}0000")
        + gue;
    let o = epicctl(&["gue", "decode", "--outer", &hex]);
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["outer"]["src"], "192.0.2.1:50000");
    assert_eq!(v["tunnel_id"], 1);
    assert_eq!(v["payload_len"], 1);
}
