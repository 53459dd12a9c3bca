//! The source of standalone mode: the resources file, read whole on every
//! reconcile, with what the runtime knows of its own machine added (its one
//! gateway node, its own networks, the clock, the grace period).

use std::path::PathBuf;

use epic_engine::plan::{DesiredInputs, GatewayNode};
use epic_engine::runtime::Source;
use epic_model::source::parse_resources;

use crate::config::{StandaloneConfig, StandaloneError, file_error};

/// The resources file of one gateway node.
#[derive(Debug, Clone)]
pub struct ResourcesFile {
    path: PathBuf,
    node: GatewayNode,
    platform_networks: Vec<ipnet::IpNet>,
    address_grace: u64,
}

impl ResourcesFile {
    /// The file `config.resources`, for the node `config` describes. The
    /// ADS address is one of the platform's own networks: no endpoint may
    /// point at it.
    pub fn new(config: &StandaloneConfig) -> Self {
        let mut platform_networks = config.platform_networks.clone();
        platform_networks.push(config.xds.ip().into());
        ResourcesFile {
            path: config.resources.clone(),
            node: GatewayNode {
                name: config.node_name.clone(),
                address: config.tunnel_address,
            },
            platform_networks,
            address_grace: config.address_grace.as_secs(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &PathBuf {
        &self.path
    }
}

impl Source for ResourcesFile {
    type State = DesiredInputs;
    type Error = StandaloneError;

    /// The file's resources; an unreadable or invalid file is an error that
    /// names it (and changes nothing).
    fn read(&mut self) -> Result<DesiredInputs, StandaloneError> {
        let path = &self.path;
        let text = std::fs::read_to_string(path).map_err(file_error("resources file", path))?;
        let mut inputs = parse_resources(&text).map_err(|source| StandaloneError::Resources {
            path: path.clone(),
            source: Box::new(source),
        })?;
        inputs.gateway_nodes = vec![self.node.clone()];
        inputs.now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        inputs.address_grace = self.address_grace;
        inputs.platform_networks = self.platform_networks.clone();
        Ok(inputs)
    }
}

/// Whether `inputs` holds no object at all.
pub(crate) fn is_empty(inputs: &DesiredInputs) -> bool {
    inputs.tenants.is_empty()
        && inputs.pools.is_empty()
        && inputs.templates.is_empty()
        && inputs.gateways.is_empty()
        && inputs.routes.is_empty()
        && inputs.backend_sets.is_empty()
}
