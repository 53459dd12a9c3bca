//! The protobuf descriptor pool that maps JSON onto Envoy messages.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// The `FileDescriptorSet` that `envoy-types` generated its Rust types from,
/// copied by `build.rs` from the resolved `envoy-types` package.
static DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

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
}
