//! Objects by `namespace/name`, for the sinks' lookups of "the object as
//! read" while they walk every planned gateway: one index per pass keeps a
//! pass over N gateways linear instead of N × N scans.

use std::collections::HashMap;

use kube::Resource;

/// Borrowed objects keyed by `(namespace, name)`; cluster-scoped objects
/// under namespace `""`. Objects without a name are left out.
///
/// ```
/// use epic_kube::index::ByKey;
/// use k8s_openapi::api::core::v1::ConfigMap;
///
/// let mut map = ConfigMap::default();
/// map.metadata.namespace = Some("acme".into());
/// map.metadata.name = Some("web".into());
/// let maps = [map];
/// let index = ByKey::new(&maps);
/// assert!(index.get("acme", "web").is_some());
/// assert!(index.get("other", "web").is_none());
/// ```
#[derive(Debug)]
pub struct ByKey<'a, K>(HashMap<(&'a str, &'a str), &'a K>);

impl<'a, K: Resource> ByKey<'a, K> {
    /// Indexes `objects`; a later duplicate key replaces an earlier one.
    pub fn new(objects: impl IntoIterator<Item = &'a K>) -> Self {
        ByKey(
            objects
                .into_iter()
                .filter_map(|o| {
                    let meta = o.meta();
                    let name = meta.name.as_deref()?;
                    Some(((meta.namespace.as_deref().unwrap_or(""), name), o))
                })
                .collect(),
        )
    }

    /// The object `namespace/name`, if indexed.
    pub fn get<'b>(&'b self, namespace: &'b str, name: &'b str) -> Option<&'a K> {
        // Shared maps are covariant in their keys: look up with the
        // shorter lifetime of the arguments.
        let map: &HashMap<(&'b str, &'b str), &'a K> = &self.0;
        map.get(&(namespace, name)).copied()
    }
}
