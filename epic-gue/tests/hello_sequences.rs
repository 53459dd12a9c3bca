//! Hello sequences with loss, reordering, replays, NAT rebinding, pauses and
//! challenges answered or not: the verifier's events must equal those of a
//! small reference model.

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
    /// The sender's next hello, delivered from NAT port `port` (or lost);
    /// the node answers a challenge if `answer`.
    Send { lost: bool, port: u8, answer: bool },
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
        6 => (prop::bool::weighted(0.2), 0u8..3, prop::bool::weighted(0.8))
            .prop_map(|(lost, port, answer)| Step::Send { lost, port, answer }),
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
    /// The pending challenge: address, nonce, deadline.
    pending: Option<(SocketAddr, u64, u64)>,
    /// The sender's highest answered nonce.
    answered: Option<u64>,
}

const INTERVAL_MS: u64 = 3000;
const LIFETIME_MS: u64 = 3 * INTERVAL_MS;
const CHALLENGE_MS: u64 = 2000;

/// What the model expects of a hello: an event, or a challenge to this
/// address with this nonce.
#[derive(Debug, PartialEq)]
enum Expected {
    Event(HelloEvent),
    Challenge(SocketAddr, u64),
}

impl Model {
    fn deliver(&mut self, now: u64, src: SocketAddr, counter: u64) -> Expected {
        match self.last {
            Some(l) if counter == l => {
                return Expected::Event(HelloEvent::Rejected {
                    reason: RejectReason::Replayed {
                        tunnel: TUNNEL,
                        counter,
                    },
                });
            }
            Some(l) if counter < l => {
                return Expected::Event(HelloEvent::Rejected {
                    reason: RejectReason::Stale {
                        tunnel: TUNNEL,
                        counter,
                        last: l,
                    },
                });
            }
            _ => {}
        }
        self.last = Some(counter);
        if self.remote == Some(src) {
            self.last_seen = now;
            return Expected::Event(HelloEvent::Refreshed {
                tunnel: TUNNEL,
                addr: src,
            });
        }
        self.pending = Some((src, counter, now + CHALLENGE_MS));
        Expected::Challenge(src, counter)
    }

    /// Whether the sender answers a challenge with `nonce`: one of its last
    /// two hellos (`sent`), not answered yet.
    fn sender_answers(&mut self, sent: &[HelloDatagram], nonce: u64) -> bool {
        let recent = sent.iter().rev().take(2).any(|d| counter(d) == nonce);
        let fresh = self.answered.is_none_or(|a| nonce > a);
        if recent && fresh {
            self.answered = Some(nonce);
        }
        recent && fresh
    }

    fn respond(&mut self, now: u64, src: SocketAddr, nonce: u64) -> HelloEvent {
        let answers = self
            .pending
            .is_some_and(|(addr, n, deadline)| addr == src && n == nonce && now <= deadline);
        if !answers {
            return HelloEvent::Rejected {
                reason: RejectReason::UnexpectedResponse {
                    tunnel: TUNNEL,
                    from: src,
                },
            };
        }
        self.pending = None;
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

fn counter(d: &HelloDatagram) -> u64 {
    HelloRepr::parse(d.as_bytes()).unwrap().counter
}

/// One sequence: the verifier and sender under test, the model, and the
/// hellos sent so far.
struct Run {
    verifier: HelloVerifier<[TunnelSlot; 2]>,
    sender: HelloSender,
    model: Model,
    sent: Vec<HelloDatagram>,
}

impl Run {
    /// Delivers `d` from `src` and checks the verifier against the model;
    /// a challenge is answered by the sender (from `src`) if `answer` and
    /// the model says the sender would.
    fn deliver(
        &mut self,
        now: u64,
        src: SocketAddr,
        d: &HelloDatagram,
        answer: bool,
    ) -> Result<(), TestCaseError> {
        let t = Instant::from_millis(now);
        let got = self.verifier.handle(t, src, d.as_bytes());
        match (self.model.deliver(now, src, counter(d)), got) {
            (Expected::Challenge(to, nonce), HelloEvent::Challenge { addr, datagram, .. }) => {
                prop_assert_eq!((addr, counter(&datagram)), (to, nonce));
                if answer && self.model.sender_answers(&self.sent, nonce) {
                    let response = self.sender.answer(datagram.as_bytes()).expect("genuine");
                    let got = self.verifier.handle(t, src, response.as_bytes());
                    prop_assert_eq!(got, self.model.respond(now, src, nonce));
                }
            }
            (Expected::Event(expected), got) => prop_assert_eq!(got, expected),
            (expected, got) => prop_assert!(false, "expected {:?}, got {:?}", expected, got),
        }
        Ok(())
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
        let mut forger = HelloSender::new(&SenderConfig::new(TUNNEL, HelloKey::new([4; 32]), TenantId(4), node), Instant::ZERO, 9_000_000_000);
        let mut verifier = HelloVerifier::new([TunnelSlot::EMPTY; 2], VerifierConfig {
            interval: Duration::from_millis(INTERVAL_MS),
            missed_intervals: 3,
            ..VerifierConfig::default()
        });
        verifier.add_tunnel(&TunnelConfig::new(TUNNEL, key.clone(), TenantId(4), node)).unwrap();
        let mut run = Run {
            verifier,
            sender: HelloSender::new(&SenderConfig::new(TUNNEL, key, TenantId(4), node), Instant::ZERO, 1_000_000),
            model: Model::default(),
            sent: vec![],
        };
        let mut held: Option<(HelloDatagram, u8)> = None;
        let mut now = 0u64;

        for s in steps {
            // Each step is one hello interval later.
            now += INTERVAL_MS;
            let t = Instant::from_millis(now);
            prop_assert_eq!(drain(&mut run.verifier, now), run.model.poll(now));
            match s {
                Step::Send { lost, port, answer } => {
                    let d = run.sender.poll_transmit(t).expect("a hello is due every interval");
                    run.sent.push(d);
                    if !lost {
                        run.deliver(now, nat(port), &d, answer)?;
                    }
                    if let Some((h, hport)) = held.take() {
                        run.deliver(now, nat(hport), &h, answer)?;
                    }
                }
                Step::Reorder { port } => {
                    let d = run.sender.poll_transmit(t).expect("a hello is due every interval");
                    run.sent.push(d);
                    if let Some((h, hport)) = held.replace((d, port)) {
                        run.deliver(now, nat(hport), &h, true)?;
                    }
                }
                Step::Replay { which, port } => {
                    if !run.sent.is_empty() {
                        // An attacker's replay: its challenge goes unanswered,
                        // and it never changes the learned mapping.
                        let d = run.sent[which % run.sent.len()];
                        run.deliver(now, nat(port), &d, false)?;
                        prop_assert_eq!(run.verifier.remote(TUNNEL), run.model.remote);
                    }
                }
                Step::Pause { intervals } => {
                    now += u64::from(intervals) * INTERVAL_MS;
                    prop_assert_eq!(drain(&mut run.verifier, now), run.model.poll(now));
                    // The sender skipped those hellos; its schedule catches up at once.
                    if let Some(d) = run.sender.poll_transmit(Instant::from_millis(now)) {
                        run.sent.push(d);
                    }
                }
                Step::Forge { port } => {
                    let d = forger.hello_now(t);
                    let got = run.verifier.handle(t, nat(port), d.as_bytes());
                    prop_assert_eq!(got, HelloEvent::Rejected { reason: RejectReason::BadMac { tunnel: TUNNEL } });
                }
            }
            prop_assert_eq!(run.verifier.remote(TUNNEL), run.model.remote);
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
    let mut exchange = |now, from, s: &mut HelloSender| {
        let hello = s.poll_transmit(now).unwrap();
        let HelloEvent::Challenge { datagram, .. } = v.handle(now, from, hello.as_bytes()) else {
            panic!("a hello from a new address is challenged");
        };
        let response = s.answer(datagram.as_bytes()).unwrap();
        (hello, v.handle(now, from, response.as_bytes()))
    };
    let (h1, learned) = exchange(Instant::ZERO, nat(0), &mut s);
    let (_, rebound) = exchange(Instant::from_millis(3000), nat(1), &mut s);
    assert_eq!(
        learned,
        HelloEvent::Learned {
            tunnel: TUNNEL,
            addr: nat(0)
        }
    );
    assert_eq!(
        rebound,
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
