//! The render phase of the plan: the gateway templates registered with the
//! renderer, and rendering with a [`RenderCache`] so that a replan after
//! one change renders only the gateways whose rendering inputs changed.
//!
//! A rendering is a pure function of the templates (the one rendered and
//! every other it may include, import or extend: all registered sources and
//! DNS name templates) and the gateway's [`TemplateContext`]; the cache keys
//! each outcome by a SHA-256 of exactly those, so a cached outcome is the
//! one rendering would produce, and [`crate::plan::plan_incremental`] gives
//! the same plan as [`crate::plan::plan`]. (Changing any template therefore
//! renders every gateway again once.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use epic_templates::{Renderer, TemplateContext};
use epic_xds::Snapshot;
use sha2::{Digest, Sha256};

use epic_model::GatewayTemplate;

/// What rendering one gateway gave: its DNS name and snapshot, or why not.
pub type RenderOutcome = Result<(String, Arc<Snapshot>), String>;

/// Rendered outcomes kept between plans, keyed by their inputs. Entries no
/// plan used since the previous plan are dropped, so the cache holds at
/// most one entry per live gateway (plus the ones of the last plan).
#[derive(Default)]
pub struct RenderCache {
    entries: HashMap<[u8; 32], RenderOutcome>,
    used: HashMap<[u8; 32], RenderOutcome>,
    hits: u64,
    misses: u64,
}

impl RenderCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Renderings served from the cache since it was made.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Renderings computed since the cache was made.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Ends a plan: what it did not use is dropped.
    pub(crate) fn finish_plan(&mut self) {
        self.entries = std::mem::take(&mut self.used);
    }
}

/// The templates of one plan: registered under `namespace/name` (built-ins
/// under their own names), their sources for the cache key, the ones that
/// failed to register, and the objects by key.
pub(crate) struct Templates<'a> {
    renderer: Renderer,
    sources: BTreeMap<String, String>,
    sources_digest: [u8; 32],
    /// Templates that did not register, with why.
    pub errors: BTreeMap<String, String>,
    /// The `GatewayTemplate` objects by (namespace, name).
    pub by_key: BTreeMap<(String, String), &'a GatewayTemplate>,
    cache: &'a mut RenderCache,
}

impl<'a> Templates<'a> {
    /// Registers every template of `templates`.
    pub fn new(templates: &'a [GatewayTemplate], cache: &'a mut RenderCache) -> Self {
        let mut set = Templates {
            renderer: Renderer::new(),
            sources: BTreeMap::new(),
            sources_digest: [0; 32],
            errors: BTreeMap::new(),
            by_key: BTreeMap::new(),
            cache,
        };
        for t in templates {
            set.register(t);
        }
        let mut digest = Sha256::new();
        for (key, source) in &set.sources {
            digest.update(key.as_bytes());
            digest.update([0]);
            digest.update(source.as_bytes());
            digest.update([0]);
        }
        set.sources_digest = digest.finalize().into();
        set
    }

    fn register(&mut self, t: &'a GatewayTemplate) {
        let ns = t
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = t.metadata.name.clone().unwrap_or_default();
        let key = format!("{ns}/{name}");
        let source = match (&t.spec.builtin, &t.spec.envoy) {
            (Some(b), None) => match epic_templates::builtin_source(b)
                .filter(|_| epic_templates::BUILTIN_TEMPLATES.contains(&b.as_str()))
            {
                Some(s) => Ok(s.to_owned()),
                None => Err(format!(
                    "unknown built-in template {b:?} (known: {})",
                    epic_templates::BUILTIN_TEMPLATES.join(", ")
                )),
            },
            (None, Some(envoy)) => Ok(envoy.clone()),
            _ => Err("exactly one of `builtin` and `envoy` must be set".to_owned()),
        };
        let registered = source.and_then(|envoy| {
            self.sources.insert(
                key.clone(),
                format!(
                    "{}\0{envoy}",
                    t.spec.dns_name.as_deref().unwrap_or_default()
                ),
            );
            self.renderer
                .add_template(&epic_templates::GatewayTemplate {
                    name: key.clone(),
                    envoy,
                    dns_name: t.spec.dns_name.clone(),
                })
                .map_err(|e| e.to_string())
        });
        if let Err(e) = registered {
            self.errors.insert(key, e);
        }
        self.by_key.insert((ns, name), t);
    }

    fn key(&self, name: &str, context: &TemplateContext) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(name.as_bytes());
        hash.update([0]);
        // A template may include, import or extend any other registered
        // template: every source is part of every key (built-ins are fixed
        // within one binary).
        hash.update(self.sources_digest);
        hash.update([0]);
        hash.update(serde_json::to_vec(context).unwrap_or_default());
        hash.finalize().into()
    }

    /// Renders template `name` for `context`, validated and as a snapshot,
    /// from the cache when the same inputs rendered before.
    pub fn render(&mut self, name: &str, context: &TemplateContext) -> RenderOutcome {
        let key = self.key(name, context);
        if let Some(outcome) = self
            .cache
            .entries
            .get(&key)
            .or_else(|| self.cache.used.get(&key))
            .cloned()
        {
            self.cache.hits += 1;
            self.cache.used.insert(key, outcome.clone());
            return outcome;
        }
        self.cache.misses += 1;
        let outcome = self
            .renderer
            .render(name, context)
            .map_err(|e| e.to_string())
            .and_then(|rendered| {
                epic_templates::validate::check_consistency(&rendered.resources)
                    .map_err(|e| e.to_string())?;
                epic_templates::policy::check_policy(&rendered.resources, context)
                    .map_err(|e| format!("refused by the platform's policy: {e}"))?;
                let snapshot =
                    crate::plan::snapshot_of(&rendered.resources).map_err(|e| e.to_string())?;
                Ok((rendered.dns_name, Arc::new(snapshot)))
            });
        self.cache.used.insert(key, outcome.clone());
        outcome
    }
}
