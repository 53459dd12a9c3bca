//! The xDS sink: each accepted gateway's snapshot in the cache the ADS
//! server serves, the gateway admitted to the server; a rejected
//! configuration keeps the last good one; gone gateways are refused.

use epic_engine::publish::{Published, publish};
use epic_engine::runtime::{Sink, SinkFuture};
use epic_xds::{KnownGateways, SnapshotCache};

use crate::config::StandaloneError;
use crate::round::Round;

/// The snapshot cache and the gateways the ADS server accepts proxies of.
#[derive(Debug)]
pub struct XdsSink {
    cache: SnapshotCache,
    known: KnownGateways,
    published: Published,
}

impl XdsSink {
    /// A sink publishing to `cache` and `known` (shared with the server).
    pub fn new(cache: SnapshotCache, known: KnownGateways) -> Self {
        XdsSink {
            cache,
            known,
            published: Published::default(),
        }
    }
}

impl Sink<Round, StandaloneError> for XdsSink {
    fn name(&self) -> &'static str {
        "xDS"
    }

    fn apply<'a>(&'a mut self, round: &'a mut Round) -> SinkFuture<'a, StandaloneError> {
        self.published = publish(&round.plan, &self.cache, &self.known, &self.published);
        round.published = self.published.clone();
        Box::pin(async { Ok(()) })
    }
}
