//! The route sink: the announced routes (`epic-route`, for BIRD) of the
//! served gateways whose proxies all serve, so BGP draws traffic only to a
//! node that can take it.

use epic_engine::runtime::{Sink, SinkFuture};
use epic_route::{Announcement, DesiredRoutes, RouteProgrammer};

use crate::config::StandaloneError;
use crate::round::Round;

/// The kernel routes of the announced addresses.
#[derive(Debug)]
pub struct RouteSink {
    routes: RouteProgrammer,
}

impl RouteSink {
    /// A sink programming through `routes`.
    pub fn new(routes: RouteProgrammer) -> Self {
        RouteSink { routes }
    }

    async fn apply_routes(&mut self, round: &mut Round) -> Result<(), StandaloneError> {
        let desired: DesiredRoutes = round
            .served_gateways()
            .filter(|g| g.status.proxies.iter().all(|p| round.ready.contains(p)))
            .flat_map(|g| g.announcements.iter())
            .map(|a| Announcement {
                address: a.address,
                aggregation: a.prefix_len,
                proxy_ready: true,
            })
            .collect();
        self.routes.sync(&desired).await?;
        Ok(())
    }
}

impl Sink<Round, StandaloneError> for RouteSink {
    fn name(&self) -> &'static str {
        "routes"
    }

    fn apply<'a>(&'a mut self, round: &'a mut Round) -> SinkFuture<'a, StandaloneError> {
        Box::pin(self.apply_routes(round))
    }
}
