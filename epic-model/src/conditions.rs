//! Condition types and reasons, typed: every condition the engine sets is
//! made here, so the vocabulary lives in one file.
//!
//! Conditions follow the Kubernetes convention (`metav1.Condition`): a type,
//! `True`/`False`, a CamelCase reason, a message, the `observedGeneration`
//! of the object they describe and a `lastTransitionTime` that changes only
//! when the status does. The engine is clock-free: it makes conditions
//! without either; [`stamp`] adds them when a status is written, keeping the
//! time of every condition whose status did not change.
//!
//! ```
//! use epic_model::conditions::{ConditionType, Reason, stamp};
//!
//! let planned = vec![ConditionType::Accepted.condition(true, Reason::Accepted, "")];
//! let written = stamp(planned.clone(), &[], Some(3), "2026-12-01T00:00:00Z");
//! assert_eq!(written[0].observed_generation, Some(3));
//! // The same status later keeps its transition time.
//! let again = stamp(planned, &written, Some(4), "2026-12-02T00:00:00Z");
//! assert_eq!(again[0].last_transition_time.as_deref(), Some("2026-12-01T00:00:00Z"));
//! assert_eq!(again[0].observed_generation, Some(4));
//! ```

use crate::Condition;

macro_rules! names {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// The name as it appears in a status.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names! {
    /// The condition types the engine sets.
    ConditionType {
        /// The object is valid and the platform will try to serve it.
        Accepted,
        /// The gateway's configuration is served and its addresses assigned.
        Programmed,
        /// Every reference of a route resolved.
        ResolvedRefs,
        /// Every endpoint of the gateway's backends may be used
        /// (`epic_engine::admission`); refused ones are not rendered.
        EndpointsAdmitted,
    }
}

names! {
    /// The reasons the engine gives (Gateway API names where the Gateway
    /// API has one).
    Reason {
        /// `Accepted=True`.
        Accepted,
        /// `Programmed=True`.
        Programmed,
        /// `ResolvedRefs=True`.
        ResolvedRefs,
        /// The gateway's namespace belongs to no tenant.
        UnknownTenant,
        /// The template or the gateway's parameters are invalid.
        InvalidParameters,
        /// The tenant may not use what the gateway asks for.
        NotAllowed,
        /// The tenant's limits are reached.
        TenantLimit,
        /// No address could be allocated.
        AddressNotAssigned,
        /// The configuration does not render or validate.
        Invalid,
        /// Another tenant's gateway already reaches the same endpoint.
        EndpointConflict,
        /// No listener of the parent accepts the route.
        NotAllowedByListeners,
        /// A backend of the route does not exist.
        BackendNotFound,
        /// `EndpointsAdmitted=True`.
        EndpointsAdmitted,
        /// An endpoint's address or node is refused (the platform's own, a
        /// special-purpose address, outside the tenant's networks, on no
        /// listed node).
        EndpointRefused,
    }
}

impl ConditionType {
    /// A condition of this type: `status` true or false, with `reason`.
    pub fn condition(self, status: bool, reason: Reason, message: impl Into<String>) -> Condition {
        Condition {
            type_: self.as_str().to_owned(),
            status: if status { "True" } else { "False" }.to_owned(),
            reason: reason.as_str().to_owned(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: None,
        }
    }
}

/// The planned conditions as they are written: each gets
/// `observed_generation` and a `last_transition_time` — the one of the
/// `current` condition of the same type if its status is unchanged, else
/// `now` (RFC 3339).
pub fn stamp(
    planned: Vec<Condition>,
    current: &[Condition],
    observed_generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    planned
        .into_iter()
        .map(|mut condition| {
            let since = current
                .iter()
                .find(|c| c.type_ == condition.type_ && c.status == condition.status)
                .and_then(|c| c.last_transition_time.clone());
            condition.last_transition_time = Some(since.unwrap_or_else(|| now.to_owned()));
            condition.observed_generation = observed_generation;
            condition
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_status_gets_a_new_transition_time() {
        let accepted = ConditionType::Accepted.condition(true, Reason::Accepted, "");
        let first = stamp(vec![accepted], &[], Some(1), "t1");
        let refused = ConditionType::Accepted.condition(false, Reason::TenantLimit, "limit");
        let second = stamp(vec![refused.clone()], &first, Some(2), "t2");
        assert_eq!(second[0].last_transition_time.as_deref(), Some("t2"));
        // A new reason with the same status is no transition.
        let other = ConditionType::Accepted.condition(false, Reason::NotAllowed, "no");
        let third = stamp(vec![other], &second, Some(3), "t3");
        assert_eq!(third[0].last_transition_time.as_deref(), Some("t2"));
        assert_eq!(third[0].reason, "NotAllowed");
    }

    #[test]
    fn names_are_the_variants() {
        assert_eq!(ConditionType::ResolvedRefs.as_str(), "ResolvedRefs");
        assert_eq!(Reason::EndpointConflict.to_string(), "EndpointConflict");
    }
}
