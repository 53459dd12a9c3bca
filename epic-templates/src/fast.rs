//! The fast decoding path: rendered text straight to protobuf bytes.
//!
//! The reference path ([`crate::render::parse_document`] then
//! [`EnvoyResources::from_json`]) parses YAML with `serde_yaml_ng` into a
//! `serde_json::Value`, deserializes each resource into a prost-reflect
//! `DynamicMessage` and re-encodes it into the typed `envoy-types` message.
//! For a large gateway that costs ~7× the template rendering itself.
//!
//! This module does the same job for the subset of YAML and of the proto3
//! JSON mapping that templates actually produce, in one pass:
//!
//! - a YAML parser for block mappings and sequences, one-line flow
//!   collections, double- and single-quoted scalars and plain scalars whose
//!   type is unambiguous (no anchors, tags, block scalars, multi-line
//!   scalars, floats, hex/octal numbers, tabs, documents markers, …), and
//! - an encoder that walks that tree with the message descriptors and
//!   writes the canonical protobuf encoding (fields in number order,
//!   defaults of implicit-presence fields skipped, repeated scalars packed —
//!   byte for byte what `DynamicMessage::encode` writes, which matters for
//!   the opaque `Any` payloads), then decodes it into the typed message.
//!
//! It is an *accelerator*, never a judge: whenever it meets anything
//! outside that subset, or anything that would be an error (unknown field,
//! wrong type, out-of-range value, unknown `@type`, duplicate key, oneof
//! conflict, null), it returns `None` and the caller runs the reference
//! path, which then produces the result or the precise error (line and
//! column, field path). So errors are exactly those of the reference path,
//! and every accepted document decodes to exactly what the reference path
//! decodes (checked by differential tests and the `templates_render` fuzz
//! target).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
use prost_reflect::{Kind, MessageDescriptor};

use crate::descriptors;
use crate::error::ResourceKind;
use crate::resources::EnvoyResources;

/// A parsed YAML node (only what the fast path accepts).
#[derive(Debug, Clone, PartialEq)]
enum Node<'a> {
    Null,
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    NegInt(i64),
    Str(Cow<'a, str>),
    Seq(Vec<Node<'a>>),
    Map(Vec<(Cow<'a, str>, Node<'a>)>),
}

/// Decodes rendered text, or `None` if the reference path must decide.
pub(crate) fn decode(text: &str) -> Option<EnvoyResources> {
    let document = parse(text)?;
    let entries = match document {
        Node::Null => return Some(EnvoyResources::default()),
        Node::Map(entries) => entries,
        _ => return None,
    };
    let mut resources = EnvoyResources::default();
    let mut seen = [false; 4];
    let mut buf = Vec::new();
    for (key, value) in &entries {
        let index = ResourceKind::ALL
            .iter()
            .position(|kind| kind.key() == key.as_ref())?;
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        let kind = ResourceKind::ALL[index];
        let items = match value {
            Node::Null => continue,
            Node::Seq(items) => items,
            _ => return None,
        };
        let desc = descriptors::message(kind.message_name())?;
        for item in items {
            buf.clear();
            encode_message(&desc, item, &mut buf)?;
            match kind {
                ResourceKind::Listener => resources.listeners.push(Listener::decode(&*buf).ok()?),
                ResourceKind::Cluster => resources.clusters.push(Cluster::decode(&*buf).ok()?),
                ResourceKind::RouteConfiguration => resources
                    .route_configurations
                    .push(RouteConfiguration::decode(&*buf).ok()?),
                ResourceKind::ClusterLoadAssignment => resources
                    .cluster_load_assignments
                    .push(ClusterLoadAssignment::decode(&*buf).ok()?),
            }
        }
    }
    Some(resources)
}

// ---------------------------------------------------------------------------
// YAML subset parser
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    indent: usize,
    /// Content after the indentation, trailing spaces removed; never empty
    /// and never a comment.
    text: &'a str,
}

struct Parser<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
    depth: usize,
}

/// Deeper nesting is left to the reference parser (which has its own
/// limit), so neither parser nor encoder can exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Parses `text` if it is entirely inside the supported YAML subset.
fn parse(text: &str) -> Option<Node<'_>> {
    if !printable(text) {
        return None;
    }
    // Rendered templates average well over 16 bytes per line.
    let mut lines = Vec::with_capacity(text.len() / 16 + 1);
    for raw in text.split('\n') {
        let content = raw.trim_start_matches(' ');
        let indent = raw.len() - content.len();
        let content = content.trim_end_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if indent == 0
            && (content.starts_with("---")
                || content.starts_with("...")
                || content.starts_with('%'))
        {
            return None;
        }
        lines.push(Line {
            indent,
            text: content,
        });
    }
    if lines.is_empty() {
        return Some(Node::Null);
    }
    let mut parser = Parser {
        lines,
        pos: 0,
        depth: 0,
    };
    let indent = parser.lines[0].indent;
    let node = parser.block(indent)?;
    (parser.pos == parser.lines.len()).then_some(node)
}

/// Only characters libyaml accepts unescaped, without tabs, carriage
/// returns or the Unicode line/paragraph separators and byte-order marks
/// (all of which have special meaning the fast parser does not model).
fn printable(text: &str) -> bool {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\n')
    {
        return true;
    }
    text.chars().all(|c| {
        matches!(c, '\n' | '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
            && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
    })
}

fn is_seq_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.pos).copied()
    }

    /// The block node whose first line is the current one, at `indent`.
    fn block(&mut self, indent: usize) -> Option<Node<'a>> {
        let line = self.peek()?;
        if is_seq_item(line.text) {
            self.sequence(indent)
        } else if key(line.text).is_some() {
            self.mapping(indent, line.text)
        } else {
            self.pos += 1;
            let node = inline(line.text, self.depth)?;
            self.check_no_deeper(indent)?;
            Some(node)
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// A line after a complete value must not be more indented than the
    /// value's own block (that would be a continuation or an error).
    fn check_no_deeper(&self, indent: usize) -> Option<()> {
        match self.peek() {
            Some(next) if next.indent > indent => None,
            _ => Some(()),
        }
    }

    fn sequence(&mut self, indent: usize) -> Option<Node<'a>> {
        self.enter()?;
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent != indent || !is_seq_item(line.text) {
                break;
            }
            let rest = line.text[1..].trim_start_matches(' ');
            let item = if rest.is_empty() {
                self.pos += 1;
                self.nested(indent, false)?
            } else if is_seq_item(rest) {
                return None;
            } else if key(rest).is_some() {
                // A compact mapping: its keys are aligned after "- ".
                let column = indent + (line.text.len() - rest.len());
                self.mapping(column, rest)?
            } else {
                self.pos += 1;
                let node = inline(rest, self.depth)?;
                self.check_no_deeper(indent)?;
                node
            };
            items.push(item);
            self.check_no_deeper(indent)?;
        }
        self.depth -= 1;
        Some(Node::Seq(items))
    }

    /// The value of a key or item whose line ended after `:` or `-`: a
    /// more indented block, a sequence at the same indentation (for a key),
    /// or null.
    fn nested(&mut self, indent: usize, allow_same_indent_seq: bool) -> Option<Node<'a>> {
        match self.peek() {
            Some(next) if next.indent > indent => self.block(next.indent),
            Some(next)
                if allow_same_indent_seq && next.indent == indent && is_seq_item(next.text) =>
            {
                self.sequence(indent)
            }
            _ => Some(Node::Null),
        }
    }

    /// A block mapping whose keys are at `indent`; `first` is the text of
    /// the first entry (the current line, or its part after "- ").
    fn mapping(&mut self, indent: usize, first: &'a str) -> Option<Node<'a>> {
        self.enter()?;
        let mut entries = Vec::with_capacity(4);
        let mut text = first;
        loop {
            let (name, rest) = key(text)?;
            self.pos += 1;
            let value = if rest.is_empty() {
                self.nested(indent, true)?
            } else {
                let node = inline(rest, self.depth)?;
                self.check_no_deeper(indent)?;
                node
            };
            entries.push((name, value));
            match self.peek() {
                Some(next) if next.indent > indent => return None,
                Some(next) if next.indent == indent => {
                    if is_seq_item(next.text) {
                        return None;
                    }
                    text = next.text;
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Some(Node::Map(entries))
    }
}

/// Longer keys are left to libyaml, which limits implicit keys to 1024
/// characters (no field name comes close).
const MAX_KEY_LEN: usize = 256;

/// Splits `key: rest` (block context). The key is an identifier or a quoted
/// scalar; `rest` is empty when the value is on the following lines.
fn key(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let (name, after) = match text.as_bytes().first()? {
        b'"' => double_quoted(text)?,
        b'\'' => single_quoted(text)?,
        _ => {
            let end = identifier_len(text)?;
            (Cow::Borrowed(&text[..end]), &text[end..])
        }
    };
    if name.len() > MAX_KEY_LEN {
        return None;
    }
    let after = after.strip_prefix(':')?;
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    let rest = after.trim_start_matches(' ');
    let rest = if rest.starts_with('#') { "" } else { rest };
    Some((name, rest))
}

/// Length of a plain key: `[A-Za-z_][A-Za-z0-9_]*`, not a YAML keyword.
fn identifier_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let first = *bytes.first()?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let mut end = 1;
    while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
        end += 1;
    }
    if matches!(first, b'n' | b'N' | b't' | b'T' | b'f' | b'F') && is_keyword(&text[..end]) {
        return None;
    }
    Some(end)
}

fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
    )
}

/// A value that fills the rest of a line (block context), optionally
/// followed by a comment.
fn inline(text: &str, depth: usize) -> Option<Node<'_>> {
    match text.as_bytes().first()? {
        b'{' | b'[' | b'"' | b'\'' => {
            let (node, rest) = flow(text, depth)?;
            end_of_line(rest).then_some(node)
        }
        _ => {
            let text = match text.find(" #") {
                Some(i) => text[..i].trim_end_matches(' '),
                None => text,
            };
            plain(text)
        }
    }
}

fn end_of_line(rest: &str) -> bool {
    rest.is_empty() || (rest.starts_with(' ') && rest.trim_start_matches(' ').starts_with('#'))
}

/// One flow node starting at the beginning of `text` (no leading spaces)
/// at nesting `depth`: returns it and the text after it.
fn flow(text: &str, depth: usize) -> Option<(Node<'_>, &str)> {
    if depth >= MAX_DEPTH {
        return None;
    }
    match text.as_bytes().first()? {
        b'"' => double_quoted(text).map(|(s, rest)| (Node::Str(s), rest)),
        b'\'' => single_quoted(text).map(|(s, rest)| (Node::Str(s), rest)),
        b'{' => {
            let mut entries = Vec::with_capacity(4);
            let mut rest = text[1..].trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix('}') {
                return Some((Node::Map(entries), after));
            }
            loop {
                let (name, after) = match rest.as_bytes().first()? {
                    b'"' => double_quoted(rest)?,
                    b'\'' => single_quoted(rest)?,
                    _ => {
                        let end = identifier_len(rest)?;
                        (Cow::Borrowed(&rest[..end]), &rest[end..])
                    }
                };
                if name.len() > MAX_KEY_LEN {
                    return None;
                }
                let after = after.strip_prefix(": ")?.trim_start_matches(' ');
                let (value, after) = flow(after, depth + 1)?;
                entries.push((name, value));
                let after = after.trim_start_matches(' ');
                if let Some(after) = after.strip_prefix('}') {
                    return Some((Node::Map(entries), after));
                }
                rest = after.strip_prefix(',')?.trim_start_matches(' ');
            }
        }
        b'[' => {
            let mut items = Vec::new();
            let mut rest = text[1..].trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix(']') {
                return Some((Node::Seq(items), after));
            }
            loop {
                let (value, after) = flow(rest, depth + 1)?;
                items.push(value);
                let after = after.trim_start_matches(' ');
                if let Some(after) = after.strip_prefix(']') {
                    return Some((Node::Seq(items), after));
                }
                rest = after.strip_prefix(',')?.trim_start_matches(' ');
            }
        }
        _ => {
            let end = text.find([',', '[', ']', '{', '}']).unwrap_or(text.len());
            let node = plain(text[..end].trim_end_matches(' '))?;
            Some((node, &text[end..]))
        }
    }
}

/// Types a plain scalar exactly as `serde_yaml_ng` does for the forms it
/// accepts (null/bool keywords, decimal integers, unambiguous strings);
/// `None` for anything else (floats, hex/octal/binary, leading zeros,
/// signs, indicators, `:` or `#` inside).
fn plain(s: &str) -> Option<Node<'_>> {
    let bytes = s.as_bytes();
    let first = *bytes.first()?;
    if s.contains([':', '#']) {
        return None;
    }
    match s {
        "null" | "Null" | "NULL" | "~" => return Some(Node::Null),
        "true" | "True" | "TRUE" => return Some(Node::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Node::Bool(false)),
        _ => {}
    }
    if first.is_ascii_alphabetic() || first == b'/' || first == b'_' {
        return Some(Node::Str(Cow::Borrowed(s)));
    }
    if first == b'-' {
        let digits = &s[1..];
        if digits.len() <= 18
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits
                .as_bytes()
                .first()
                .is_some_and(|b| (b'1'..=b'9').contains(b))
        {
            return Some(Node::NegInt(-digits.parse::<i64>().ok()?));
        }
        return None;
    }
    if !first.is_ascii_digit() {
        return None;
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        if bytes.len() > 1 && first == b'0' {
            return None;
        }
        return s.parse::<u64>().ok().map(Node::UInt);
    }
    if bytes.len() > 1 && matches!(bytes[1], b'x' | b'o' | b'b') {
        return None;
    }
    if s.parse::<f64>().is_ok() {
        return None;
    }
    // Starts with a digit, is neither an integer nor a float: a string
    // (`5s`, `10.0.0.1`, `1_000`).
    Some(Node::Str(Cow::Borrowed(s)))
}

/// A double-quoted scalar on one line with the escapes the YAML formatter
/// writes (`\" \\ \n \t \r \uXXXX`); returns it and the text after it.
fn double_quoted(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let body = &text[1..];
    let end = body.find(['"', '\\'])?;
    if body.as_bytes()[end] == b'"' {
        return Some((Cow::Borrowed(&body[..end]), &body[end + 1..]));
    }
    let mut out = String::with_capacity(body.len());
    out.push_str(&body[..end]);
    let mut rest = &body[end..];
    loop {
        let i = rest.find(['"', '\\'])?;
        out.push_str(&rest[..i]);
        if rest.as_bytes()[i] == b'"' {
            return Some((Cow::Owned(out), &rest[i + 1..]));
        }
        let escape = rest.as_bytes().get(i + 1)?;
        let mut skip = 2;
        match escape {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'n' => out.push('\n'),
            b't' => out.push('\t'),
            b'r' => out.push('\r'),
            b'u' => {
                let hex = rest.get(i + 2..i + 6)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
                skip = 6;
            }
            _ => return None,
        }
        rest = &rest[i + skip..];
    }
}

/// A single-quoted scalar on one line (`''` is a quote).
fn single_quoted(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let body = &text[1..];
    let mut out: Option<String> = None;
    let mut start = 0;
    loop {
        let i = start + body[start..].find('\'')?;
        if body.as_bytes().get(i + 1) == Some(&b'\'') {
            out.get_or_insert_with(String::new)
                .push_str(&body[start..=i]);
            start = i + 2;
            continue;
        }
        let value = match out {
            Some(mut owned) => {
                owned.push_str(&body[start..i]);
                Cow::Owned(owned)
            }
            None => Cow::Borrowed(&body[..i]),
        };
        return Some((value, &body[i + 1..]));
    }
}

// ---------------------------------------------------------------------------
// Descriptor-driven canonical protobuf encoder
// ---------------------------------------------------------------------------

/// What the encoder needs to know about one message type, computed once
/// per thread: field look-up by JSON or proto name (JSON name first, as
/// prost-reflect does) with a cheap hash, and each field's properties.
struct Plan {
    desc: MessageDescriptor,
    /// `Some` for `google.protobuf.*` types (their JSON form is special).
    well_known: Option<Box<str>>,
    by_name: HashMap<Box<str>, usize, BuildHasherDefault<Fnv>>,
    fields: Vec<FieldPlan>,
}

struct FieldPlan {
    number: u32,
    kind: Kind,
    list: bool,
    packed: bool,
    presence: bool,
    /// Map and group fields are left to the reference path.
    unsupported: bool,
    /// Index of the containing oneof.
    oneof: Option<usize>,
}

impl Plan {
    fn new(desc: &MessageDescriptor) -> Self {
        let oneofs: Vec<String> = desc.oneofs().map(|o| o.name().to_owned()).collect();
        let mut by_name = HashMap::default();
        let mut fields = Vec::new();
        for (index, field) in desc.fields().enumerate() {
            by_name.insert(field.json_name().into(), index);
            fields.push(FieldPlan {
                number: field.number(),
                kind: field.kind(),
                list: field.is_list(),
                packed: field.is_packed(),
                presence: field.supports_presence(),
                unsupported: field.is_map() || field.is_group(),
                oneof: field
                    .containing_oneof()
                    .and_then(|o| oneofs.iter().position(|name| name == o.name())),
            });
        }
        for (index, field) in desc.fields().enumerate() {
            by_name.entry(field.name().into()).or_insert(index);
        }
        Plan {
            desc: desc.clone(),
            well_known: desc
                .full_name()
                .strip_prefix("google.protobuf.")
                .map(Into::into),
            by_name,
            fields,
        }
    }
}

thread_local! {
    /// Keyed by the address of the type's full name in the (static,
    /// never freed) descriptor pool.
    static PLANS: RefCell<HashMap<usize, Rc<Plan>, BuildHasherDefault<Fnv>>> =
        RefCell::new(HashMap::default());
}

fn plan(desc: &MessageDescriptor) -> Rc<Plan> {
    PLANS.with(|plans| {
        let key = desc.full_name().as_ptr() as usize;
        if let Some(plan) = plans.borrow().get(&key) {
            return plan.clone();
        }
        let plan = Rc::new(Plan::new(desc));
        plans.borrow_mut().insert(key, plan.clone());
        plan
    })
}

/// FNV-1a: field names are short and trusted (a miss only means fallback).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

/// Appends the canonical encoding of `node` as message `desc` (without key
/// or length) to `buf`.
fn encode_message(desc: &MessageDescriptor, node: &Node<'_>, buf: &mut Vec<u8>) -> Option<()> {
    encode_planned(&plan(desc), node, buf)
}

fn encode_planned(plan: &Plan, node: &Node<'_>, buf: &mut Vec<u8>) -> Option<()> {
    if let Some(wkt) = &plan.well_known {
        return encode_well_known(&plan.desc, wkt, node, buf);
    }
    let Node::Map(entries) = node else {
        return None;
    };
    encode_fields(plan, entries.iter().map(|(k, v)| (k.as_ref(), v)), buf)
}

fn encode_fields<'n, 'a: 'n>(
    plan: &Plan,
    entries: impl Iterator<Item = (&'n str, &'n Node<'a>)>,
    buf: &mut Vec<u8>,
) -> Option<()> {
    let mut fields: Vec<(&FieldPlan, &Node<'_>)> = Vec::with_capacity(8);
    let mut oneofs = 0u64;
    for (key, value) in entries {
        let field = &plan.fields[*plan.by_name.get(key)?];
        if matches!(value, Node::Null) || field.unsupported {
            return None;
        }
        if let Some(oneof) = field.oneof {
            // At most one member of each oneof may be set.
            let bit = 1u64.checked_shl(u32::try_from(oneof).ok()?)?;
            if oneofs & bit != 0 {
                return None;
            }
            oneofs |= bit;
        }
        fields.push((field, value));
    }
    fields.sort_unstable_by_key(|(field, _)| field.number);
    if fields.windows(2).any(|w| w[0].0.number == w[1].0.number) {
        return None;
    }
    for (field, value) in &fields {
        encode_field(field, value, buf)?;
    }
    Some(())
}

fn encode_field(field: &FieldPlan, node: &Node<'_>, buf: &mut Vec<u8>) -> Option<()> {
    let number = field.number;
    let kind = &field.kind;
    if field.list {
        let Node::Seq(items) = node else {
            return None;
        };
        if items.is_empty() {
            return Some(());
        }
        if let Kind::Message(desc) = kind {
            let plan = plan(desc);
            for item in items {
                encode_key(number, WireType::LengthDelimited, buf);
                nested(buf, |buf| encode_planned(&plan, item, buf))?;
            }
        } else if field.packed {
            encode_key(number, WireType::LengthDelimited, buf);
            nested(buf, |buf| {
                for item in items {
                    scalar(kind, item)?.write_value(buf);
                }
                Some(())
            })?;
        } else {
            for item in items {
                scalar(kind, item)?.write_field(number, buf);
            }
        }
        return Some(());
    }
    if let Kind::Message(desc) = kind {
        encode_key(number, WireType::LengthDelimited, buf);
        return nested(buf, |buf| encode_message(desc, node, buf));
    }
    let scalar = scalar(kind, node)?;
    if field.presence || !scalar.is_default(kind) {
        scalar.write_field(number, buf);
    }
    Some(())
}

/// Writes a length-delimited body produced by `body` (the key is already
/// written): reserves one byte for the length and moves the body if the
/// length needs more.
fn nested(buf: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>) -> Option<()>) -> Option<()> {
    let start = buf.len();
    buf.push(0);
    body(buf)?;
    let len = buf.len() - start - 1;
    let width = encoded_len_varint(len as u64);
    if width > 1 {
        let end = buf.len();
        buf.resize(end + width - 1, 0);
        buf.copy_within(start + 1..end, start + width);
    }
    encode_varint(len as u64, &mut &mut buf[start..start + width]);
    Some(())
}

/// A decoded scalar field value.
enum Scalar<'n> {
    Varint(u64),
    Fixed32(u32),
    Fixed64(u64),
    Bytes(&'n str),
}

impl Scalar<'_> {
    fn is_default(&self, kind: &Kind) -> bool {
        match (self, kind) {
            (Scalar::Varint(v), Kind::Enum(desc)) => {
                *v as i64 as i32 == desc.default_value().number()
            }
            (Scalar::Varint(v), _) => *v == 0,
            (Scalar::Fixed32(v), _) => *v == 0,
            (Scalar::Fixed64(v), _) => *v == 0,
            (Scalar::Bytes(s), _) => s.is_empty(),
        }
    }

    fn wire_type(&self) -> WireType {
        match self {
            Scalar::Varint(_) => WireType::Varint,
            Scalar::Fixed32(_) => WireType::ThirtyTwoBit,
            Scalar::Fixed64(_) => WireType::SixtyFourBit,
            Scalar::Bytes(_) => WireType::LengthDelimited,
        }
    }

    fn write_value(&self, buf: &mut Vec<u8>) {
        match self {
            Scalar::Varint(v) => encode_varint(*v, buf),
            Scalar::Fixed32(v) => buf.extend_from_slice(&v.to_le_bytes()),
            Scalar::Fixed64(v) => buf.extend_from_slice(&v.to_le_bytes()),
            Scalar::Bytes(s) => {
                encode_varint(s.len() as u64, buf);
                buf.extend_from_slice(s.as_bytes());
            }
        }
    }

    fn write_field(&self, number: u32, buf: &mut Vec<u8>) {
        encode_key(number, self.wire_type(), buf);
        self.write_value(buf);
    }
}

/// The integer in `node`, if it is one.
fn integer(node: &Node<'_>) -> Option<i128> {
    match node {
        Node::UInt(v) => Some(i128::from(*v)),
        Node::NegInt(v) => Some(i128::from(*v)),
        _ => None,
    }
}

/// A scalar of `kind` from `node`, with the reference path's range checks;
/// `None` for every other case (strings for numbers, numbers for enums,
/// floats, bytes, …), which the reference path then decides.
fn scalar<'n>(kind: &Kind, node: &'n Node<'_>) -> Option<Scalar<'n>> {
    Some(match kind {
        Kind::Bool => match node {
            Node::Bool(b) => Scalar::Varint(u64::from(*b)),
            _ => return None,
        },
        Kind::String => match node {
            Node::Str(s) => Scalar::Bytes(s.as_ref()),
            _ => return None,
        },
        Kind::Enum(desc) => match node {
            Node::Str(s) if desc.full_name() != "google.protobuf.NullValue" => {
                Scalar::Varint(desc.get_value_by_name(s)?.number() as i64 as u64)
            }
            _ => return None,
        },
        Kind::Int32 => Scalar::Varint(i32::try_from(integer(node)?).ok()? as i64 as u64),
        Kind::Int64 => Scalar::Varint(i64::try_from(integer(node)?).ok()? as u64),
        Kind::Uint32 => Scalar::Varint(u64::from(u32::try_from(integer(node)?).ok()?)),
        Kind::Uint64 => Scalar::Varint(u64::try_from(integer(node)?).ok()?),
        Kind::Sint32 => {
            let v = i32::try_from(integer(node)?).ok()?;
            Scalar::Varint(u64::from(((v << 1) ^ (v >> 31)) as u32))
        }
        Kind::Sint64 => {
            let v = i64::try_from(integer(node)?).ok()?;
            Scalar::Varint(((v << 1) ^ (v >> 63)) as u64)
        }
        Kind::Fixed32 => Scalar::Fixed32(u32::try_from(integer(node)?).ok()?),
        Kind::Sfixed32 => Scalar::Fixed32(i32::try_from(integer(node)?).ok()? as u32),
        Kind::Fixed64 => Scalar::Fixed64(u64::try_from(integer(node)?).ok()?),
        Kind::Sfixed64 => Scalar::Fixed64(i64::try_from(integer(node)?).ok()? as u64),
        Kind::Float | Kind::Double | Kind::Bytes | Kind::Message(_) => return None,
    })
}

/// The well-known types with a special JSON form that the fast path
/// handles: `Any` (non-WKT payload), `Duration` and the integer, bool and
/// string wrappers. Everything else under `google.protobuf.` is left to the
/// reference path.
fn encode_well_known(
    desc: &MessageDescriptor,
    wkt: &str,
    node: &Node<'_>,
    buf: &mut Vec<u8>,
) -> Option<()> {
    let wrapped = |kind: Kind, buf: &mut Vec<u8>| -> Option<()> {
        let scalar = scalar(&kind, node)?;
        if !scalar.is_default(&kind) {
            scalar.write_field(1, buf);
        }
        Some(())
    };
    match wkt {
        "Any" => encode_any(desc, node, buf),
        "Duration" => {
            let Node::Str(s) = node else {
                return None;
            };
            let (seconds, nanos) = duration(s)?;
            if seconds != 0 {
                Scalar::Varint(seconds).write_field(1, buf);
            }
            if nanos != 0 {
                Scalar::Varint(nanos).write_field(2, buf);
            }
            Some(())
        }
        "BoolValue" => wrapped(Kind::Bool, buf),
        "StringValue" => wrapped(Kind::String, buf),
        "Int32Value" => wrapped(Kind::Int32, buf),
        "Int64Value" => wrapped(Kind::Int64, buf),
        "UInt32Value" => wrapped(Kind::Uint32, buf),
        "UInt64Value" => wrapped(Kind::Uint64, buf),
        _ => None,
    }
}

fn encode_any(desc: &MessageDescriptor, node: &Node<'_>, buf: &mut Vec<u8>) -> Option<()> {
    let Node::Map(entries) = node else {
        return None;
    };
    let mut type_url = None;
    for (key, value) in entries {
        if key == "@type" {
            let Node::Str(url) = value else {
                return None;
            };
            if type_url.replace(url.as_ref()).is_some() {
                return None;
            }
        }
    }
    let type_url = type_url?;
    let (_, name) = type_url.rsplit_once('/')?;
    if name.starts_with("google.protobuf.") {
        return None;
    }
    let payload = plan(&desc.parent_pool().get_message_by_name(name)?);
    Scalar::Bytes(type_url).write_field(1, buf);
    let start = buf.len();
    encode_key(2, WireType::LengthDelimited, buf);
    let body = buf.len();
    nested(buf, |buf| {
        encode_fields(
            &payload,
            entries
                .iter()
                .filter(|(key, _)| key != "@type")
                .map(|(k, v)| (k.as_ref(), v)),
            buf,
        )
    })?;
    if buf.len() == body + 1 {
        // An empty payload: `value` has its default and is not written.
        buf.truncate(start);
    }
    Some(())
}

/// `"<seconds>[.<1-9 digits>]s"`, non-negative and in range; as the
/// varint values of `seconds` and `nanos`.
fn duration(s: &str) -> Option<(u64, u64)> {
    let body = s.strip_suffix('s')?;
    let (whole, fraction) = match body.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (body, None),
    };
    if whole.is_empty() || whole.len() > 12 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds: u64 = whole.parse().ok()?;
    if seconds > 315_576_000_000 {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) => {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let scale = 10u64.pow(9 - f.len() as u32);
            f.parse::<u64>().ok()? * scale
        }
    };
    Some((seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Node<'_> {
        Node::Str(Cow::Borrowed(v))
    }

    #[test]
    fn parses_the_template_subset() {
        let text = "a:\n- name: x\n  port: 80\n  tags: [h2, http/1.1]\n  sub: {k: \"v\\n\", n: -3}\n-\n  b: 'it''s'\nc:\n  d: 5s  # comment\n\ne:\n";
        let node = parse(text).unwrap();
        assert_eq!(
            node,
            Node::Map(vec![
                (
                    "a".into(),
                    Node::Seq(vec![
                        Node::Map(vec![
                            ("name".into(), s("x")),
                            ("port".into(), Node::UInt(80)),
                            ("tags".into(), Node::Seq(vec![s("h2"), s("http/1.1")])),
                            (
                                "sub".into(),
                                Node::Map(vec![
                                    ("k".into(), Node::Str("v\n".into())),
                                    ("n".into(), Node::NegInt(-3)),
                                ])
                            ),
                        ]),
                        Node::Map(vec![("b".into(), Node::Str("it's".into()))]),
                    ])
                ),
                ("c".into(), Node::Map(vec![("d".into(), s("5s"))])),
                ("e".into(), Node::Null),
            ])
        );
    }

    #[test]
    fn leaves_everything_else_to_the_reference_parser() {
        for text in [
            "a: &x 1\n",
            "a: *x\n",
            "a: !!str 1\n",
            "a: |\n  x\n",
            "a: foo\n  bar\n",
            "a: 1.5\n",
            "a: 0x10\n",
            "a: 010\n",
            "a: .inf\n",
            "a: +1\n",
            "a:\tb\n",
            "a: \"x\"-y\n",
            "a: \"multi\n  line\"\n",
            "---\na: 1\n",
            "a: b: c\n",
            "a: [1, 2\n",
            "a: [1, 2,]\n",
            "a: {b: 1, }\n",
            "a: \"\\x41\"\n",
            "? a\n: b\n",
            "a: x:y\n",
            "a : b\n",
            "true: 1\n",
            "a:\n  b: 1\n c: 2\n",
            "- a\n- b\n  c\n",
            "a: 1\n- b\n",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn deep_nesting_is_left_to_the_reference_parser() {
        let flow = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse(&flow), None);
        let block: String = (0..10_000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        assert_eq!(parse(&block), None);
        let shallow = format!(
            "a: {}{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse(&shallow).is_some());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("5s"), Some((5, 0)));
        assert_eq!(duration("0.5s"), Some((0, 500_000_000)));
        assert_eq!(duration("1.000000001s"), Some((1, 1)));
        assert_eq!(duration("-1s"), None);
        assert_eq!(duration("1.s"), None);
        assert_eq!(duration("315576000001s"), None);
    }
}
