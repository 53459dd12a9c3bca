//! The protobuf descriptor pool that maps JSON onto Envoy messages.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// The `FileDescriptorSet` that `envoy-types` generated its Rust types from:
/// a committed copy of the package's `src/generated/types.bin`, written by
/// `cargo xtask descriptors` and checked against the resolved `envoy-types`
/// by `cargo xtask descriptors --check` (part of `cargo xtask test`).
static DESCRIPTOR_SET: &[u8] = include_bytes!("../envoy-descriptors.binpb");

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(DESCRIPTOR_SET)
        .expect("the envoy-types descriptor set is a valid FileDescriptorSet")
});

/// The descriptor pool of every Envoy v3 message (core resources, all
/// extensions, well-known types), the same set `envoy-types` was generated
/// from. Decoded once, on first use.
pub fn envoy_pool() -> &'static DescriptorPool {
    &POOL
}

/// Looks up a message by its fully qualified name; `None` if it is not an
/// Envoy (or well-known) type.
pub fn message(name: &str) -> Option<MessageDescriptor> {
    envoy_pool().get_message_by_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_holds_resources_and_extensions() {
        for name in [
            "envoy.config.listener.v3.Listener",
            "envoy.config.cluster.v3.Cluster",
            "envoy.config.route.v3.RouteConfiguration",
            "envoy.config.endpoint.v3.ClusterLoadAssignment",
            "envoy.config.bootstrap.v3.Bootstrap",
            "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig",
            "envoy.extensions.filters.udp.udp_proxy.v3.Route",
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "envoy.extensions.filters.http.router.v3.Router",
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "google.protobuf.Any",
            "google.protobuf.Duration",
        ] {
            assert!(message(name).is_some(), "{name} missing from the pool");
        }
    }

    /// The embedded schema is the one the typed messages were generated
    /// from: a typed message with nested and repeated fields set decodes as
    /// a dynamic message with no unknown fields, and re-encodes to the same
    /// bytes.
    #[test]
    fn pool_matches_the_typed_envoy_messages() {
        use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, socket_address};
        use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
        use prost::{Message, Name};
        use prost_reflect::DynamicMessage;

        let listener = Listener {
            name: "http".into(),
            address: Some(Address {
                address: Some(
                    envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                        SocketAddress {
                            address: "192.0.2.1".into(),
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(80)),
                            ..Default::default()
                        },
                    ),
                ),
            }),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.tcp_proxy".into(),
                    config_type: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let descriptor = message(&Listener::full_name()).expect("Listener in the pool");
        let bytes = listener.encode_to_vec();
        let dynamic = DynamicMessage::decode(descriptor, bytes.as_slice()).expect("decodes");
        assert_eq!(dynamic.unknown_fields().count(), 0);
        assert_eq!(dynamic.encode_to_vec(), bytes);
    }
}
