//! Hello sequences with loss, reordering, replays, NAT rebinding and pauses:
//! the verifier's events must equal those of a small reference model.

use std::net::SocketAddr;
use std::time::Duration;

use epic_gue::hello::{
    HelloDatagram, HelloEvent, HelloKey, HelloSender, HelloVerifier, Instant, RejectReason,
    SenderConfig, TunnelConfig, TunnelSlot, VerifierConfig,
};
use epic_gue::{HelloRepr, NodeId, TenantId, TunnelId};
use proptest::prelude::*;

const TUNNEL: TunnelId = TunnelId(77);

#[derive(Debug, Clone)]
enum Step {
    /// The sender's next hello, delivered from NAT port `port` (or lost).
    Send { lost: bool, port: u8 },
    /// Hold the next hello back and deliver it after the following one (reordering).
    Reorder { port: u8 },
    /// Re-deliver an earlier hello (an attacker's replay), from any port.
    Replay { which: usize, port: u8 },
    /// Time passes without hellos (the verifier is polled).
    Pause { intervals: u8 },
    /// A forged hello: right tunnel, wrong key.
    Forge { port: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (prop::bool::weighted(0.2), 0u8..3).prop_map(|(lost, port)| Step::Send { lost, port }),
        1 => (0u8..3).prop_map(|port| Step::Reorder { port }),
        1 => (any::<usize>(), 0u8..3).prop_map(|(which, port)| Step::Replay { which, port }),
        1 => (1u8..5).prop_map(|intervals| Step::Pause { intervals }),
        1 => (0u8..3).prop_map(|port| Step::Forge { port }),
    ]
}

/// Reference model of what the verifier must conclude.
#[derive(Default)]
struct Model {
    last: Option<u64>,
    remote: Option<SocketAddr>,
    last_seen: u64,
}

const INTERVAL_MS: u64 = 3000;
const LIFETIME_MS: u64 = 3 * INTERVAL_MS;

impl Model {
    fn deliver(&mut self, now: u64, src: SocketAddr, counter: u64) -> HelloEvent {
        match self.last {
            Some(l) if counter == l => {
                return HelloEvent::Rejected {
                    reason: RejectReason::Replayed {
                        tunnel: TUNNEL,
                        counter,
                    },
                };
            }
            Some(l) if counter < l => {
                return HelloEvent::Rejected {
                    reason: RejectReason::Stale {
                        tunnel: TUNNEL,
                        counter,
                        last: l,
                    },
                };
            }
            _ => {}
        }
        self.last = Some(counter);
        self.last_seen = now;
        let ev = match self.remote {
            None => HelloEvent::Learned {
                tunnel: TUNNEL,
                addr: src,
            },
            Some(old) if old != src => HelloEvent::Rebound {
                tunnel: TUNNEL,
                old,
                new: src,
            },
            Some(addr) => HelloEvent::Refreshed {
                tunnel: TUNNEL,
                addr,
            },
        };
        self.remote = Some(src);
        ev
    }

    fn poll(&mut self, now: u64) -> Vec<HelloEvent> {
        match self.remote {
            Some(addr) if self.last_seen + LIFETIME_MS <= now => {
                self.remote = None;
                vec![HelloEvent::Expired {
                    tunnel: TUNNEL,
                    addr,
                }]
            }
            _ => vec![],
        }
    }
}

fn nat(port: u8) -> SocketAddr {
    SocketAddr::new("203.0.113.1".parse().unwrap(), 40000 + u16::from(port))
}

fn drain(v: &mut HelloVerifier<[TunnelSlot; 2]>, now: u64) -> Vec<HelloEvent> {
    let mut out = vec![];
    while let Some(e) = v.poll(Instant::from_millis(now)) {
        out.push(e);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn events_match_model(steps in proptest::collection::vec(step(), 1..40)) {
        let key = HelloKey::new([3; 32]);
        let node = NodeId::from_name("node-1");
        let mut sender = HelloSender::new(&SenderConfig::new(TUNNEL, key.clone(), TenantId(4), node), Instant::ZERO, 1_000_000);
        let mut forger = HelloSender::new(&SenderConfig::new(TUNNEL, HelloKey::new([4; 32]), TenantId(4), node), Instant::ZERO, 9_000_000_000);
        let mut verifier = HelloVerifier::new([TunnelSlot::EMPTY; 2], VerifierConfig {
            interval: Duration::from_millis(INTERVAL_MS),
            missed_intervals: 3,
            ..VerifierConfig::default()
        });
        verifier.add_tunnel(&TunnelConfig::new(TUNNEL, key, TenantId(4), node)).unwrap();
        let mut model = Model::default();
        let mut sent: Vec<HelloDatagram> = vec![];
        let mut held: Option<(HelloDatagram, u8)> = None;
        let mut now = 0u64;

        let counter = |d: &HelloDatagram| HelloRepr::parse(d.as_bytes()).unwrap().counter;
        for s in steps {
            // Each step is one hello interval later.
            now += INTERVAL_MS;
            let t = Instant::from_millis(now);
            prop_assert_eq!(drain(&mut verifier, now), model.poll(now));
            match s {
                Step::Send { lost, port } => {
                    let d = sender.poll_transmit(t).expect("a hello is due every interval");
                    sent.push(d);
                    if !lost {
                        let got = verifier.handle(t, nat(port), d.as_bytes());
                        prop_assert_eq!(got, model.deliver(now, nat(port), counter(&d)));
                    }
                    if let Some((h, hport)) = held.take() {
                        let got = verifier.handle(t, nat(hport), h.as_bytes());
                        prop_assert_eq!(got, model.deliver(now, nat(hport), counter(&h)));
                    }
                }
                Step::Reorder { port } => {
                    let d = sender.poll_transmit(t).expect("a hello is due every interval");
                    sent.push(d);
                    if let Some((h, hport)) = held.replace((d, port)) {
                        let got = verifier.handle(t, nat(hport), h.as_bytes());
                        prop_assert_eq!(got, model.deliver(now, nat(hport), counter(&h)));
                    }
                }
                Step::Replay { which, port } => {
                    if !sent.is_empty() {
                        let d = sent[which % sent.len()];
                        let got = verifier.handle(t, nat(port), d.as_bytes());
                        prop_assert_eq!(got, model.deliver(now, nat(port), counter(&d)));
                        // A replay never changes the learned mapping.
                        prop_assert_eq!(verifier.remote(TUNNEL), model.remote);
                    }
                }
                Step::Pause { intervals } => {
                    now += u64::from(intervals) * INTERVAL_MS;
                    prop_assert_eq!(drain(&mut verifier, now), model.poll(now));
                    // The sender skipped those hellos; its schedule catches up at once.
                    let _ = sender.poll_transmit(Instant::from_millis(now)).map(|d| sent.push(d));
                }
                Step::Forge { port } => {
                    let d = forger.hello_now(t);
                    let got = verifier.handle(t, nat(port), d.as_bytes());
                    prop_assert_eq!(got, HelloEvent::Rejected { reason: RejectReason::BadMac { tunnel: TUNNEL } });
                }
            }
            prop_assert_eq!(verifier.remote(TUNNEL), model.remote);
        }
    }
}

#[test]
fn nat_rebinding_then_old_mapping_replay() {
    let key = HelloKey::new([1; 32]);
    let node = NodeId::from_name("n");
    let mut s = HelloSender::new(
        &SenderConfig::new(TUNNEL, key.clone(), TenantId(1), node),
        Instant::ZERO,
        0,
    );
    let mut v = HelloVerifier::new([TunnelSlot::EMPTY; 1], VerifierConfig::default());
    v.add_tunnel(&TunnelConfig::new(TUNNEL, key, TenantId(1), node))
        .unwrap();
    let h1 = s.poll_transmit(Instant::ZERO).unwrap();
    let h2 = s.poll_transmit(Instant::from_millis(3000)).unwrap();
    assert_eq!(
        v.handle(Instant::ZERO, nat(0), h1.as_bytes()),
        HelloEvent::Learned {
            tunnel: TUNNEL,
            addr: nat(0)
        }
    );
    assert_eq!(
        v.handle(Instant::from_millis(3000), nat(1), h2.as_bytes()),
        HelloEvent::Rebound {
            tunnel: TUNNEL,
            old: nat(0),
            new: nat(1)
        }
    );
    // An attacker replays the first hello from the old mapping: refused, mapping kept.
    assert!(matches!(
        v.handle(Instant::from_millis(3001), nat(0), h1.as_bytes()),
        HelloEvent::Rejected {
            reason: RejectReason::Stale { .. }
        }
    ));
    assert_eq!(v.remote(TUNNEL), Some(nat(1)));
}
