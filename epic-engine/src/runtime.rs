//! How a runtime drives the engine: a [`Source`] of desired state, the
//! engine's pure step, and a list of [`Sink`]s ([`Sinks`]) that apply what
//! the step decided, in order.
//!
//! Standalone mode (`epic-standalone`) reads a resources file and applies
//! the plan to the data path, the xDS cache, the public interface, its Envoy
//! processes, the kernel's routes and a status file. The gateway controller
//! (`epic-kube`) reads reflector stores and writes gateway and pool status
//! and proxy `StatefulSet`s; the cluster controller reads a user cluster and
//! writes its mirror on the platform and the status back. Each is a source
//! plus a list of sinks; what one round decided and what the sinks did is
//! the round (`R`), which each sink reads and adds to.
//!
//! ```
//! use std::convert::Infallible;
//! use epic_engine::runtime::{Sink, SinkFuture, Sinks, Source};
//!
//! /// Desired state: how many proxies.
//! struct Fixed(usize);
//! impl Source for Fixed {
//!     type State = usize;
//!     type Error = Infallible;
//!     fn read(&mut self) -> Result<usize, Infallible> {
//!         Ok(self.0)
//!     }
//! }
//!
//! /// A round: what was wanted, what the sinks did.
//! #[derive(Default)]
//! struct Round {
//!     wanted: usize,
//!     log: Vec<String>,
//! }
//!
//! struct Proxies;
//! impl Sink<Round, Infallible> for Proxies {
//!     fn name(&self) -> &'static str {
//!         "proxies"
//!     }
//!     fn apply<'a>(&'a mut self, round: &'a mut Round) -> SinkFuture<'a, Infallible> {
//!         Box::pin(async move {
//!             round.log.push(format!("{} proxies", round.wanted));
//!             Ok(())
//!         })
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let mut source = Fixed(2);
//! let mut sinks = Sinks::new().with(Proxies);
//! let mut round = Round { wanted: source.read().unwrap(), ..Round::default() };
//! sinks.apply(&mut round).await.unwrap();
//! assert_eq!(round.log, ["2 proxies"]);
//! assert_eq!(sinks.names(), ["proxies"]);
//! # });
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// What [`Sink::apply`] returns: boxed, so the sinks of one runtime fit in
/// one list.
pub type SinkFuture<'a, E> = Pin<Box<dyn Future<Output = Result<(), E>> + Send + 'a>>;

/// Where a runtime's desired state comes from: a resources file, the
/// reflector stores of a cluster.
pub trait Source {
    /// What one read gives.
    type State;
    /// Why a read failed (a store that cannot fail: `Infallible`).
    type Error;
    /// The desired state now. A read that fails changes nothing downstream.
    fn read(&mut self) -> Result<Self::State, Self::Error>;
}

/// One part of the world a round is applied to: the data path, the xDS
/// cache, Envoy processes, status, proxy objects.
///
/// A sink applies only its own part, reading what the engine decided and
/// what earlier sinks did from the round and adding its own outcome to it.
/// It returns an error only when the round must stop (standalone mode stops
/// at the first failed sink, so the next round starts from what is true);
/// sinks that write many objects record each object's failure in the round
/// and go on.
pub trait Sink<R: ?Sized, E>: Any + Send {
    /// The sink's name, for logs and reports.
    fn name(&self) -> &'static str;
    /// Applies this sink's part of `round`.
    fn apply<'a>(&'a mut self, round: &'a mut R) -> SinkFuture<'a, E>;
}

/// A runtime's sinks, applied in the order they were added.
pub struct Sinks<R: ?Sized, E> {
    sinks: Vec<Box<dyn Sink<R, E>>>,
}

impl<R: ?Sized, E> Default for Sinks<R, E> {
    fn default() -> Self {
        Sinks { sinks: Vec::new() }
    }
}

impl<R: ?Sized + 'static, E: 'static> fmt::Debug for Sinks<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl<R: ?Sized + 'static, E: 'static> Sinks<R, E> {
    /// No sinks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// These sinks and then `sink`.
    #[must_use]
    pub fn with(mut self, sink: impl Sink<R, E>) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// The sinks' names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.sinks.iter().map(|s| s.name()).collect()
    }

    /// Applies `round` to every sink in order; stops at the first error.
    pub async fn apply(&mut self, round: &mut R) -> Result<(), E> {
        for sink in &mut self.sinks {
            sink.apply(round).await?;
        }
        Ok(())
    }

    /// The sink of type `S`, if there is one (to read what it holds:
    /// running proxies, counters).
    pub fn get<S: Sink<R, E>>(&self) -> Option<&S> {
        self.sinks.iter().find_map(|s| {
            let any: &dyn Any = s.as_ref();
            any.downcast_ref()
        })
    }

    /// The sink of type `S`, to change (restart what it runs, stop it).
    pub fn get_mut<S: Sink<R, E>>(&mut self) -> Option<&mut S> {
        self.sinks.iter_mut().find_map(|s| {
            let any: &mut dyn Any = s.as_mut();
            any.downcast_mut()
        })
    }
}
