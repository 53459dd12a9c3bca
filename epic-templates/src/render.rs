//! Rendering: minijinja with strict undefined behaviour and a YAML-safe
//! formatter, then YAML → proto3 JSON → typed Envoy resources.

use std::fmt::Write as _;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};

use crate::builtin;
use crate::context::TemplateContext;
use crate::error::TemplateError;
use crate::resources::EnvoyResources;

/// Suffix of the internal name under which a template's DNS name template is stored.
const DNS_SUFFIX: &str = ".dns";
/// The custom auto-escape mode of Envoy templates.
const YAML_ESCAPE: &str = "yaml";

/// A gateway template: the Envoy resources template and an optional DNS
/// name template (the `GatewayTemplate` resource's content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayTemplate {
    /// Template name, used in every error.
    pub name: String,
    /// The Envoy resources template: YAML with minijinja expressions that
    /// renders to a mapping of `listeners`, `clusters`,
    /// `route_configurations` and `cluster_load_assignments`.
    pub envoy: String,
    /// The DNS name template (plain text, no YAML escaping), e.g.
    /// `{{ gateway.name }}.{{ gateway.namespace }}.example.com`.
    pub dns_name: Option<String>,
}

/// The result of rendering a template for one gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The rendered DNS name (empty if the template has no DNS template and
    /// the context had none).
    pub dns_name: String,
    /// The typed Envoy resources.
    pub resources: EnvoyResources,
}

/// A set of compiled templates (the built-ins plus any added ones) that
/// renders gateways into Envoy resources.
#[derive(Debug)]
pub struct Renderer {
    env: Environment<'static>,
}

/// The most template instructions one render may run (minijinja "fuel").
///
/// The built-in `http` template for 1,000 routes and 100 clusters of 10
/// endpoints uses less than 500,000 (measured: it fails at 50,000 and passes
/// at 500,000), so this leaves 20 times that; a template that exceeds it
/// fails with [`TemplateError::Render`] ("engine ran out of fuel").
pub const RENDER_FUEL: u64 = 10_000_000;

/// The most bytes one render may produce. Fuel bounds instructions and the
/// values they build, not what a cheap loop emits (`{{ big }}` a million
/// times): the output is written into a buffer that refuses to grow past
/// this, and the render fails with [`TemplateError::Render`] ("rendered
/// output exceeds ..."). The built-in `http` template for 1,000 routes
/// renders well under 1 MiB.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

/// A buffer that fails writes past `limit` bytes.
struct Bounded {
    out: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "rendered output exceeds {} bytes",
                self.limit
            )));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders `template` for `value` into at most [`MAX_RENDERED_BYTES`].
fn render_bounded(
    template: &minijinja::Template<'_, '_>,
    value: Value,
    name: &str,
) -> Result<String, TemplateError> {
    let mut out = Bounded {
        out: Vec::new(),
        limit: MAX_RENDERED_BYTES,
    };
    template
        .render_captured_to(value, &mut out)
        .map_err(|err| render_error(name, &err))?;
    String::from_utf8(out.out).map_err(|e| TemplateError::Render {
        template: name.to_owned(),
        line: 0,
        message: format!("rendered output is not UTF-8: {e}"),
    })
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    /// A renderer holding the built-in templates (`tcp`, `udp`, `http`,
    /// `https`) and their shared partial `epic/common`.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Templates may come from tenants: bound the work one render may do,
        // so a runaway loop fails with an error instead of stalling the
        // controller.
        env.set_fuel(Some(RENDER_FUEL));
        env.set_debug(true);
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("default delimiters are valid"),
        );
        env.set_auto_escape_callback(|name| {
            if name.ends_with(DNS_SUFFIX) {
                AutoEscape::None
            } else {
                AutoEscape::Custom(YAML_ESCAPE.into())
            }
        });
        env.set_formatter(format_value);
        env.set_path_join_callback(confine);
        env.add_function("fail", fail);
        for (name, source) in builtin::SOURCES {
            env.add_template(name, source)
                .unwrap_or_else(|err| panic!("built-in template {name} compiles: {err:#}"));
        }
        let mut renderer = Self { env };
        for (name, dns) in builtin::DNS_SOURCES {
            renderer
                .add_source(&format!("{name}{DNS_SUFFIX}"), dns.to_string())
                .unwrap_or_else(|err| panic!("built-in DNS template {name} compiles: {err}"));
        }
        renderer
    }

    /// Compiles and adds a template (replacing one of the same name, but
    /// never a built-in: [`TemplateError::ReservedName`]). Syntax errors
    /// carry the template name, line and column.
    pub fn add_template(&mut self, template: &GatewayTemplate) -> Result<(), TemplateError> {
        if is_reserved(&template.name) {
            return Err(TemplateError::ReservedName(template.name.clone()));
        }
        self.add_source(&template.name, template.envoy.clone())?;
        let dns_name = format!("{}{DNS_SUFFIX}", template.name);
        match &template.dns_name {
            Some(source) => self.add_source(&dns_name, source.clone())?,
            None => self.env.remove_template(&dns_name),
        }
        Ok(())
    }

    fn add_source(&mut self, name: &str, source: String) -> Result<(), TemplateError> {
        self.env
            .add_template_owned(name.to_owned(), source.clone())
            .map_err(|err| syntax_error(name, &source, &err))
    }

    /// Names of the templates that can be rendered (built-ins and added).
    pub fn template_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .env
            .templates()
            .map(|(name, _)| name.to_owned())
            .filter(|name| !name.ends_with(DNS_SUFFIX) && !name.starts_with("epic/"))
            .collect();
        names.sort();
        names
    }

    /// Renders template `name` for `context`: the DNS name first (if the
    /// template has a DNS template), then the Envoy resources, decoded and
    /// type-checked against the Envoy protobuf schema.
    pub fn render(&self, name: &str, context: &TemplateContext) -> Result<Rendered, TemplateError> {
        let (dns_name, text) = self.render_text(name, context)?;
        let resources = EnvoyResources::from_text(name, &text)?;
        Ok(Rendered {
            dns_name,
            resources,
        })
    }

    /// Renders template `name` to its text (after the DNS name), without
    /// decoding: `(dns_name, rendered text)`. Useful to inspect a template.
    pub fn render_text(
        &self,
        name: &str,
        context: &TemplateContext,
    ) -> Result<(String, String), TemplateError> {
        let template = self
            .env
            .get_template(name)
            .map_err(|_| TemplateError::UnknownTemplate(name.to_owned()))?;
        let dns_template = format!("{name}{DNS_SUFFIX}");
        let mut dns_name = context.dns_name.clone();
        let value = if let Ok(dns) = self.env.get_template(&dns_template) {
            let rendered = render_bounded(&dns, Value::from(Serde(context)), &dns_template)?;
            dns_name = rendered.trim().to_owned();
            check_dns_name(name, &dns_name)?;
            let mut with_dns = context.clone();
            with_dns.dns_name = dns_name.clone();
            Value::from(Serde(&with_dns))
        } else {
            Value::from(Serde(context))
        };
        let text = render_bounded(&template, value, name)?;
        Ok((dns_name, text))
    }
}

/// Whether `name` is a built-in's (or under the built-ins' `epic/`).
fn is_reserved(name: &str) -> bool {
    let base = name.strip_suffix(DNS_SUFFIX).unwrap_or(name);
    base.starts_with("epic/") || builtin::SOURCES.iter().any(|(n, _)| *n == base)
}

/// Where `{% include %}`, `{% import %}` or `{% extends %}` of `name` in
/// template `parent` leads. A template named `namespace/name` (a tenant's)
/// reaches the built-ins and its own namespace's templates only: a short
/// name is its namespace's (`part` → `namespace/part`), a name in another
/// namespace leads to no template (the render fails: "template not
/// found"). Built-ins and templates without a namespace are not confined.
///
/// ```text
/// confine("epic/upstreams", "acme/web") -> "epic/upstreams"
/// confine("part", "acme/web")           -> "acme/part"
/// confine("acme/part", "acme/web")      -> "acme/part"
/// confine("globex/secret", "acme/web")  -> "globex/secret (outside namespace acme)"
/// ```
fn confine<'s>(name: &'s str, parent: &'s str) -> std::borrow::Cow<'s, str> {
    use std::borrow::Cow;
    let parent_base = parent.strip_suffix(DNS_SUFFIX).unwrap_or(parent);
    let namespace = match parent_base.split_once('/') {
        Some((ns, _)) if !is_reserved(parent_base) => ns,
        _ => return Cow::Borrowed(name),
    };
    if is_reserved(name) {
        return Cow::Borrowed(name);
    }
    match name.split_once('/') {
        None => Cow::Owned(format!("{namespace}/{name}")),
        Some((ns, _)) if ns == namespace => Cow::Borrowed(name),
        Some(_) => Cow::Owned(format!("{name} (outside namespace {namespace})")),
    }
}

/// The formatter: in Envoy templates every interpolated value is emitted as
/// a YAML-safe scalar — strings (and lists, maps) as JSON, which is valid
/// YAML flow syntax, so quotes, newlines, `#`, `:` or `{{` in a value stay
/// inside one quoted scalar; numbers and booleans as themselves; none as
/// `null`. Values marked safe (`|safe`, macro output) are written as they are.
fn format_value(
    out: &mut Output<'_>,
    state: &mut State<'_, '_>,
    value: &Value,
) -> Result<(), Error> {
    match state.auto_escape() {
        AutoEscape::Custom(mode) if mode == YAML_ESCAPE => write_yaml_value(out, value),
        _ => minijinja::escape_formatter(out, state, value),
    }
}

fn write_yaml_value(out: &mut Output<'_>, value: &Value) -> Result<(), Error> {
    use minijinja::value::ValueKind;
    if value.is_safe() {
        return out
            .write_str(value.as_str().unwrap_or_default())
            .map_err(Error::from);
    }
    match value.kind() {
        ValueKind::Undefined => Err(Error::new(
            ErrorKind::UndefinedError,
            "undefined value printed",
        )),
        ValueKind::None => out.write_str("null").map_err(Error::from),
        ValueKind::Bool | ValueKind::Number => write!(out, "{value}").map_err(Error::from),
        ValueKind::String => {
            yaml_quote(value.as_str().unwrap_or_default(), out).map_err(Error::from)
        }
        _ => {
            let json = serde_json::to_value(value).map_err(|err| {
                Error::new(
                    ErrorKind::BadSerialization,
                    "value cannot be written as YAML",
                )
                .with_source(err)
            })?;
            let mut text = String::new();
            yaml_flow(&json, &mut text);
            out.write_str(&text).map_err(Error::from)
        }
    }
}

/// Writes a JSON value in YAML flow syntax (JSON syntax, YAML-safe strings).
pub(crate) fn yaml_flow(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::String(s) => {
            let _ = yaml_quote(s, out);
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                yaml_flow(item, out);
            }
            out.push(']');
        }
        serde_json::Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = yaml_quote(key, out);
                out.push_str(": ");
                yaml_flow(item, out);
            }
            out.push('}');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Writes `s` as a YAML double-quoted scalar. Besides `"` and `\`, every
/// character a YAML parser could treat as a line break or reject (C0/C1
/// controls, DEL, U+0085, U+2028, U+2029, U+FEFF, U+FFFE/U+FFFF) is
/// escaped, so the scalar is read back exactly and never ends early.
pub(crate) fn yaml_quote<W: std::fmt::Write + ?Sized>(s: &str, out: &mut W) -> std::fmt::Result {
    out.write_char('"')?;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\t' => "\\t",
            '\r' => "\\r",
            '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{feff}'
            | '\u{fffe}'
            | '\u{ffff}' => "",
            _ => continue,
        };
        out.write_str(&s[start..i])?;
        if escape.is_empty() {
            write!(out, "\\u{:04x}", u32::from(c))?;
        } else {
            out.write_str(escape)?;
        }
        start = i + c.len_utf8();
    }
    out.write_str(&s[start..])?;
    out.write_char('"')
}

/// `fail(message)`: aborts rendering with `message` (for template preconditions).
fn fail(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn syntax_error(name: &str, source: &str, err: &Error) -> TemplateError {
    let line = err.line().unwrap_or(1);
    let column = err
        .range()
        .map(|range| column_of(source, range.start))
        .unwrap_or(1);
    TemplateError::Syntax {
        template: name.to_owned(),
        line,
        column,
        message: describe(err),
    }
}

fn render_error(name: &str, err: &Error) -> TemplateError {
    TemplateError::Render {
        template: err.name().unwrap_or(name).to_owned(),
        line: err.line().unwrap_or(0),
        message: describe(err),
    }
}

/// The error's kind and detail, plus its causes (without minijinja's debug dump).
fn describe(err: &Error) -> String {
    let mut message = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message
}

/// 1-based column of byte `offset` in `source`.
fn column_of(source: &str, offset: usize) -> usize {
    let offset = offset.min(source.len());
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    source[line_start..offset].chars().count() + 1
}

/// Parses rendered text (YAML, or JSON as a fast path) into a JSON value.
pub(crate) fn parse_document(
    template: &str,
    text: &str,
) -> Result<serde_json::Value, TemplateError> {
    if text.trim_start().starts_with('{')
        && let Ok(value) = serde_json::from_str(text)
    {
        return Ok(value);
    }
    serde_yaml_ng::from_str::<serde_json::Value>(text).map_err(|err| {
        let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
        let snippet = text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or_default()
            .to_owned();
        TemplateError::Yaml {
            template: template.to_owned(),
            line,
            column,
            message: err.to_string(),
            snippet,
        }
    })
}

/// Checks a rendered DNS name (RFC 1123 host name, lowercase).
fn check_dns_name(template: &str, name: &str) -> Result<(), TemplateError> {
    let invalid = |reason: &str| TemplateError::InvalidDnsName {
        template: template.to_owned(),
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid("each label must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid("labels may hold only a-z, 0-9 and '-'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid("labels may not start or end with '-'"));
        }
    }
    Ok(())
}
