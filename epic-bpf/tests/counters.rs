//! The counting TC program in the real kernel: BPF_PROG_TEST_RUN with exact
//! figures, and real traffic across a veth pair between two namespaces.

use epic_bpf::{CounterProgram, CounterValue, Direction, Error};
use epic_test_support::{Netns, require_root};

/// An Ethernet + IPv4 + UDP frame, 60 bytes, between test addresses.
fn udp_frame() -> Vec<u8> {
    let mut frame = vec![
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00, // ethernet
        0x45, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, // ipv4
        198, 51, 100, 1, 198, 51, 100, 2, // addresses
        0x30, 0x39, 0x17, 0xc0, 0x00, 0x1a, 0x00, 0x00, // udp
    ];
    frame.resize(60, 0xab);
    frame
}

#[test]
fn test_run_counts_exact_packets_and_bytes() {
    if !require_root("test_run_counts_exact_packets_and_bytes") {
        return;
    }
    let program = CounterProgram::load().expect("load the embedded program");
    assert_eq!(program.counters().unwrap(), CounterValue::default());
    let frame = udp_frame();
    for _ in 0..3 {
        assert_eq!(program.test_run(&frame).unwrap(), 0, "TC_ACT_OK");
    }
    assert_eq!(
        program.counters().unwrap(),
        CounterValue {
            packets: 3,
            bytes: 3 * frame.len() as u64
        }
    );
}

#[test]
fn counts_traffic_across_a_veth_pair_in_both_directions() {
    if !require_root("counts_traffic_across_a_veth_pair_in_both_directions") {
        return;
    }
    let a = Netns::new("bpf-a").unwrap();
    let b = Netns::new("bpf-b").unwrap();
    a.add_veth("va", &b, "vb").unwrap();
    a.add_address("va", "198.51.100.1/24").unwrap();
    b.add_address("vb", "198.51.100.2/24").unwrap();

    let (mut ingress, mut egress) = b
        .run_in(|| -> Result<_, Error> {
            let mut ingress = CounterProgram::load()?;
            ingress.attach("vb", Direction::Ingress)?;
            let mut egress = CounterProgram::load()?;
            egress.attach("vb", Direction::Egress)?;
            Ok((ingress, egress))
        })
        .unwrap()
        .expect("attach inside namespace b");
    assert_eq!(ingress.attachments(), vec![("vb", Direction::Ingress)]);

    const PINGS: u64 = 5;
    a.ping("198.51.100.2", PINGS as u32).unwrap();

    // Each echo request is an 98-byte frame (14 ethernet + 20 IPv4 + 8 ICMP + 56 data);
    // ARP or IPv6 neighbour traffic may add a few more packets.
    let seen_in = ingress.counters().unwrap();
    let seen_out = egress.counters().unwrap();
    assert!(
        seen_in.packets >= PINGS && seen_in.bytes >= PINGS * 98,
        "ingress {seen_in:?}"
    );
    assert!(
        seen_out.packets >= PINGS && seen_out.bytes >= PINGS * 98,
        "egress {seen_out:?}"
    );
    assert!(
        seen_in.packets < PINGS + 10,
        "ingress counted traffic that was not sent: {seen_in:?}"
    );

    // Detached, the program stops counting.
    ingress.detach("vb", Direction::Ingress).unwrap();
    assert!(ingress.attachments().is_empty());
    a.ping("198.51.100.2", 2).unwrap();
    assert_eq!(ingress.counters().unwrap(), seen_in);
    assert!(egress.counters().unwrap().packets >= seen_out.packets + 2);

    // Detaching twice, or attaching to a missing interface, are errors that say where.
    let err = ingress.detach("vb", Direction::Ingress).unwrap_err();
    assert!(err.to_string().contains("vb ingress"), "{err}");
    let err = b
        .run_in(|| egress.attach("nosuch0", Direction::Ingress))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Attach { interface, .. } if interface == "nosuch0"),
        "{err}"
    );
}
