//! Segment Spec events, "parse, don't validate".
//!
//! One Segment call (`track`, `identify`, `group`, `page`, `screen`, `alias`) goes in as raw
//! JSON bytes and comes out either as an [`Event`] that is valid by construction (it has an
//! identity, a message id, a corrected time, and whatever its type requires) or as an
//! [`EventError`] that says precisely what was wrong.
//!
//! The raw JSON is read in a single pass into a private struct that keeps only the fields the
//! engine uses; everything else (`integrations`, `version`, `channel`, most of `context`, ...)
//! is skipped without being allocated.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::time::Timestamp;

/// A single call larger than this many bytes is rejected (Segment's 32 KB limit).
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// A `messageId` of this many characters or more is rejected.
pub const MAX_MESSAGE_ID_CHARS: usize = 100;

/// Prefix of message ids derived from the call's content when the call carries none.
const AUTO_MESSAGE_ID_PREFIX: &str = "auto-";
/// How much of an offending value is quoted back in an error message.
const MAX_QUOTED_CHARS: usize = 80;

// ---------------------------------------------------------------------------------------------
// MessageId
// ---------------------------------------------------------------------------------------------

/// A Segment `messageId`: 1 to 99 characters. Used to deduplicate retried calls.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String")]
pub struct MessageId(String);

impl MessageId {
    /// Validates a message id: non-empty and fewer than [`MAX_MESSAGE_ID_CHARS`] characters.
    pub fn parse(id: impl Into<String>) -> Result<Self, EventError> {
        let id = id.into();
        if id.is_empty() {
            return Err(EventError::EmptyMessageId);
        }
        // A string has at least as many bytes as characters: only count when it may matter.
        if id.len() >= MAX_MESSAGE_ID_CHARS {
            let chars = id.chars().count();
            if chars >= MAX_MESSAGE_ID_CHARS {
                return Err(EventError::MessageIdTooLong { chars });
            }
        }
        Ok(MessageId(id))
    }

    /// The deterministic id given to a call that has none: `auto-` followed by the first
    /// 32 hex digits of the SHA-256 of the call's raw bytes, so an identical retry dedupes.
    pub fn from_content(raw: &[u8]) -> Self {
        let digest = Sha256::digest(raw);
        let mut id = String::with_capacity(AUTO_MESSAGE_ID_PREFIX.len() + 32);
        id.push_str(AUTO_MESSAGE_ID_PREFIX);
        id.push_str(&hex::encode(&digest[..16]));
        MessageId(id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for MessageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MessageId {
    type Error = EventError;

    fn try_from(id: String) -> Result<Self, Self::Error> {
        MessageId::parse(id)
    }
}

impl TryFrom<&str> for MessageId {
    type Error = EventError;

    fn try_from(id: &str) -> Result<Self, Self::Error> {
        MessageId::parse(id)
    }
}

impl FromStr for MessageId {
    type Err = EventError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        MessageId::parse(id)
    }
}

// ---------------------------------------------------------------------------------------------
// Event
// ---------------------------------------------------------------------------------------------

/// One accepted Segment call.
// Deserialize reads back the engine's own stored form (raw events in DynamoDB); untrusted input
// goes through `parse_call` / `parse_payload`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub message_id: MessageId,
    /// At least one of `user_id` / `anonymous_id` is `Some` (guaranteed by [`parse_call`]).
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub kind: EventKind,
    /// Event time, corrected for client clock skew.
    pub timestamp: Timestamp,
    pub received_at: Option<Timestamp>,
    pub properties: Map<String, Value>,
    /// identify/group: top-level `traits` (falling back to `context.traits`);
    /// other calls: `context.traits`.
    pub traits: Map<String, Value>,
    /// `context.groupId` (a number is converted to its string form).
    pub context_group_id: Option<String>,
}

/// The call type and what only that type carries.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum EventKind {
    Track {
        event: String,
    },
    Identify,
    Group {
        group_id: String,
    },
    Page {
        name: Option<String>,
        category: Option<String>,
    },
    Screen {
        name: Option<String>,
        category: Option<String>,
    },
    Alias {
        previous_id: String,
    },
}

impl EventKind {
    /// Type name as in the Segment spec: "track", "identify", ...
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Track { .. } => "track",
            EventKind::Identify => "identify",
            EventKind::Group { .. } => "group",
            EventKind::Page { .. } => "page",
            EventKind::Screen { .. } => "screen",
            EventKind::Alias { .. } => "alias",
        }
    }
}

impl Event {
    /// The identity events are keyed by: userId if present, else anonymousId.
    pub fn user_key(&self) -> &str {
        self.user_id
            .as_deref()
            .or(self.anonymous_id.as_deref())
            .unwrap_or("")
    }

    /// The account this event names, if any: groupId of a group call, else context.groupId.
    pub fn account_id(&self) -> Option<&str> {
        match &self.kind {
            EventKind::Group { group_id } => Some(group_id),
            _ => self.context_group_id.as_deref(),
        }
    }

    /// Type name as in the Segment spec: "track", "identify", ...
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// The name used for matching: track → event name, page/screen → name (may be None),
    /// others None.
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            EventKind::Track { event } => Some(event),
            EventKind::Page { name, .. } | EventKind::Screen { name, .. } => name.as_deref(),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a single call (or a whole payload) was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("the payload is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("a Segment call must be a JSON object (`{{...}}`)")]
    NotAnObject,
    #[error(
        "the call has no `type`; expected one of {TYPES} \
         (or send it to the type's endpoint, e.g. /v1/track)"
    )]
    MissingType,
    #[error("unknown call type `{0}`; expected one of {TYPES}")]
    UnknownType(String),
    #[error("the body's `type` is `{body}` but the call was sent to the `{url}` endpoint")]
    TypeMismatch { url: String, body: String },
    #[error(
        "the call has neither `userId` nor `anonymousId`; \
         at least one must be a non-empty string or a number"
    )]
    MissingIdentity,
    #[error("a track call needs a non-empty string `event` (the event name)")]
    TrackWithoutEvent,
    #[error("a group call needs a non-empty `groupId`")]
    GroupWithoutGroupId,
    #[error("an alias call needs a non-empty `previousId`")]
    AliasWithoutPreviousId,
    #[error(
        "`messageId` is {chars} characters long; \
         it must be shorter than {MAX_MESSAGE_ID_CHARS} characters"
    )]
    MessageIdTooLong { chars: usize },
    #[error("`messageId` must not be empty")]
    EmptyMessageId,
    #[error(
        "the call is {bytes} bytes; a single call may be at most {MAX_EVENT_BYTES} bytes (32 KB)"
    )]
    TooLarge { bytes: usize },
    #[error(
        "`{field}` is {value}, which is not an ISO-8601 timestamp with a time zone \
         (expected a string such as \"2026-11-23T07:40:03.123Z\")"
    )]
    BadTimestamp { field: &'static str, value: String },
    #[error(
        "the call has no time: none of `timestamp`, `originalTimestamp` or `receivedAt` \
         is present and no receive time was supplied"
    )]
    NoTimestamp,
    #[error("`{field}` must be {expected}")]
    WrongFieldType {
        field: &'static str,
        expected: &'static str,
    },
}

const TYPES: &str = "track, identify, group, page, screen, alias";

impl EventError {
    /// A stable snake_case code per variant, for API responses and counts.
    pub fn code(&self) -> &'static str {
        match self {
            EventError::InvalidJson(_) => "invalid_json",
            EventError::NotAnObject => "not_an_object",
            EventError::MissingType => "missing_type",
            EventError::UnknownType(_) => "unknown_type",
            EventError::TypeMismatch { .. } => "type_mismatch",
            EventError::MissingIdentity => "missing_identity",
            EventError::TrackWithoutEvent => "track_without_event",
            EventError::GroupWithoutGroupId => "group_without_group_id",
            EventError::AliasWithoutPreviousId => "alias_without_previous_id",
            EventError::MessageIdTooLong { .. } => "message_id_too_long",
            EventError::EmptyMessageId => "empty_message_id",
            EventError::TooLarge { .. } => "too_large",
            EventError::BadTimestamp { .. } => "bad_timestamp",
            EventError::NoTimestamp => "no_timestamp",
            EventError::WrongFieldType { .. } => "wrong_field_type",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// Parse one Segment call from its raw JSON bytes.
///
/// `call_type` is `Some("track")` etc. when the type comes from the URL (Segment HTTP API
/// `/v1/track`); the body may then omit `type`, and a body `type` that disagrees is rejected.
/// `received_at` is the server's receive time; when `Some` it overrides any `receivedAt` in the
/// body. Leading and trailing ASCII whitespace (e.g. a JSONL line's newline) is ignored, for the
/// size limit and for the derived message id alike.
pub fn parse_call(
    raw: &[u8],
    call_type: Option<&str>,
    received_at: Option<Timestamp>,
) -> Result<Event, EventError> {
    let raw = raw.trim_ascii();
    check_size(raw)?;
    let call = read_call(raw)?;
    build_event(call, raw, call_type, received_at, &Inherited::default())
}

/// Parse one JSONL line or one HTTP body that is either a single call or a batch envelope
/// `{"batch": [...], "context": {...}, "sentAt": "...", ...}`.
///
/// The outer `Err` means the whole payload is unusable: invalid JSON, not an object, `batch`
/// not an array, or a malformed batch-level `context` / `sentAt`. Otherwise each call gets its
/// own result, so one bad item does not sink the others. Batch items inherit the batch's
/// `context` (shallow merge, the item's keys win) and, when they have none, its `sentAt`.
pub fn parse_payload(
    raw: &[u8],
    received_at: Option<Timestamp>,
) -> Result<Vec<Result<Event, EventError>>, EventError> {
    let raw = raw.trim_ascii();
    let mut envelope = read_call(raw)?;
    let items = match envelope.batch.take() {
        None => {
            // A single call: reuse what was just parsed rather than reading the bytes again.
            let event = check_size(raw).and_then(|()| {
                build_event(envelope, raw, None, received_at, &Inherited::default())
            });
            return Ok(vec![event]);
        }
        Some(Shaped::WrongType) => {
            return Err(EventError::WrongFieldType {
                field: "batch",
                expected: "an array of calls",
            })
        }
        Some(Shaped::Ok(items)) => items,
    };
    let inherited = Inherited {
        context: match envelope.context.take() {
            None => None,
            Some(Shaped::Ok(context)) => Some(context),
            Some(Shaped::WrongType) => {
                return Err(EventError::WrongFieldType {
                    field: "context",
                    expected: "an object",
                })
            }
        },
        sent_at: timestamp_field(envelope.sent_at.take(), "sentAt")?,
    };
    Ok(items
        .into_iter()
        .map(|item| {
            let item = item.get().as_bytes();
            check_size(item)?;
            let call = read_call(item)?;
            build_event(call, item, None, received_at, &inherited)
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// From raw call to Event
// ---------------------------------------------------------------------------------------------

/// What a batch item takes from its envelope.
#[derive(Default)]
struct Inherited {
    context: Option<RawContext>,
    sent_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallType {
    Track,
    Identify,
    Group,
    Page,
    Screen,
    Alias,
}

impl CallType {
    fn from_name(name: &str) -> Option<CallType> {
        const ALL: [(&str, CallType); 6] = [
            ("track", CallType::Track),
            ("identify", CallType::Identify),
            ("group", CallType::Group),
            ("page", CallType::Page),
            ("screen", CallType::Screen),
            ("alias", CallType::Alias),
        ];
        ALL.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, t)| t)
    }
}

fn check_size(raw: &[u8]) -> Result<(), EventError> {
    if raw.len() > MAX_EVENT_BYTES {
        Err(EventError::TooLarge { bytes: raw.len() })
    } else {
        Ok(())
    }
}

fn read_call(raw: &[u8]) -> Result<RawCall<'_>, EventError> {
    serde_json::from_slice(raw).map_err(|err| {
        // The readers below only raise data errors for a top-level value that is not an
        // object; anything else is a syntax error. Tell the two apart (error path only).
        if err.is_data() && serde_json::from_slice::<IgnoredAny>(raw).is_ok() {
            EventError::NotAnObject
        } else {
            EventError::InvalidJson(err.to_string())
        }
    })
}

fn resolve_type(body: Option<Value>, url: Option<&str>) -> Result<CallType, EventError> {
    let body = match body {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(EventError::WrongFieldType {
                field: "type",
                expected: "a string",
            })
        }
    };
    let url_type = match url {
        None => None,
        Some(url) => {
            Some(CallType::from_name(url).ok_or_else(|| EventError::UnknownType(url.to_owned()))?)
        }
    };
    let body_type = match &body {
        None => None,
        Some(name) => {
            Some(CallType::from_name(name).ok_or_else(|| EventError::UnknownType(name.clone()))?)
        }
    };
    match (url_type, body_type) {
        (Some(u), Some(b)) if u != b => Err(EventError::TypeMismatch {
            url: url.unwrap_or_default().to_owned(),
            body: body.unwrap_or_default(),
        }),
        (Some(t), _) | (None, Some(t)) => Ok(t),
        (None, None) => Err(EventError::MissingType),
    }
}

fn build_event(
    mut call: RawCall<'_>,
    raw: &[u8],
    url_type: Option<&str>,
    server_received_at: Option<Timestamp>,
    inherited: &Inherited,
) -> Result<Event, EventError> {
    let call_type = resolve_type(call.call_type.take(), url_type)?;

    let message_id = match call.message_id.take() {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(MessageId::parse(s)?),
        Some(Value::Number(n)) => Some(MessageId::parse(number_to_string(&n))?),
        Some(_) => {
            return Err(EventError::WrongFieldType {
                field: "messageId",
                expected: "a string",
            })
        }
    }
    .unwrap_or_else(|| MessageId::from_content(raw));

    let user_id = id_field(call.user_id.take(), "userId")?;
    let anonymous_id = id_field(call.anonymous_id.take(), "anonymousId")?;
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(EventError::MissingIdentity);
    }

    let mut properties = object_field(call.properties.take(), "properties")?;
    let kind = match call_type {
        CallType::Track => EventKind::Track {
            event: text_field(call.event.take(), "event")?.ok_or(EventError::TrackWithoutEvent)?,
        },
        CallType::Identify => EventKind::Identify,
        CallType::Group => EventKind::Group {
            group_id: id_field(call.group_id.take(), "groupId")?
                .ok_or(EventError::GroupWithoutGroupId)?,
        },
        CallType::Alias => EventKind::Alias {
            previous_id: id_field(call.previous_id.take(), "previousId")?
                .ok_or(EventError::AliasWithoutPreviousId)?,
        },
        CallType::Page | CallType::Screen => {
            let name = text_field(call.name.take(), "name")?
                .or_else(|| property_text(&properties, "name"));
            let category = text_field(call.category.take(), "category")?
                .or_else(|| property_text(&properties, "category"));
            if call_type == CallType::Page {
                EventKind::Page { name, category }
            } else {
                EventKind::Screen { name, category }
            }
        }
    };

    // Clock-skew correction as Segment does it.
    let timestamp = timestamp_field(call.timestamp.take(), "timestamp")?;
    let original_timestamp = timestamp_field(call.original_timestamp.take(), "originalTimestamp")?;
    let sent_at = timestamp_field(call.sent_at.take(), "sentAt")?.or(inherited.sent_at);
    let body_received_at = timestamp_field(call.received_at.take(), "receivedAt")?;
    let received_at = server_received_at.or(body_received_at);
    let device_time = original_timestamp.or(timestamp);
    let corrected = match (sent_at, received_at, device_time) {
        (Some(sent), Some(received), Some(device)) => {
            Timestamp(received.0.saturating_sub(sent.0.saturating_sub(device.0)))
        }
        _ => timestamp
            .or(original_timestamp)
            .or(received_at)
            .ok_or(EventError::NoTimestamp)?,
    };

    // Context: the item's own keys win over the batch's (shallow merge); only the keys the
    // engine reads are ever looked at, so nothing else needs merging.
    let mut context = match call.context.take() {
        None => RawContext::default(),
        Some(Shaped::Ok(context)) => context,
        Some(Shaped::WrongType) => {
            return Err(EventError::WrongFieldType {
                field: "context",
                expected: "an object",
            })
        }
    };
    let batch_context = inherited.context.as_ref();
    let context_group_id = match context.group_id.take() {
        Some(v) => Some(v),
        None => batch_context.and_then(|c| c.group_id.clone()),
    };
    let context_group_id = id_field(context_group_id, "context.groupId")?;

    let top_level_traits = match call_type {
        CallType::Identify | CallType::Group => call.traits.take(),
        _ => None,
    };
    let traits = match top_level_traits {
        Some(traits) => object_field(Some(traits), "traits")?,
        None => {
            let context_traits = match context.traits.take() {
                Some(v) => Some(v),
                None => batch_context.and_then(|c| c.traits.clone()),
            };
            object_field(context_traits, "context.traits")?
        }
    };
    if properties.is_empty() {
        // Give back any spare capacity; most identify calls have no properties at all.
        properties = Map::new();
    }

    Ok(Event {
        message_id,
        user_id,
        anonymous_id,
        kind,
        timestamp: corrected,
        received_at,
        properties,
        traits,
        context_group_id,
    })
}

/// An identifier: a non-empty string, or a number converted to its string form as Segment
/// does. Null and the empty string count as absent.
fn id_field(value: Option<Value>, field: &'static str) -> Result<Option<String>, EventError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok((!s.is_empty()).then_some(s)),
        Some(Value::Number(n)) => Ok(Some(number_to_string(&n))),
        Some(_) => Err(EventError::WrongFieldType {
            field,
            expected: "a string or a number",
        }),
    }
}

/// A free-text field: a string; null and the empty string count as absent.
fn text_field(value: Option<Value>, field: &'static str) -> Result<Option<String>, EventError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok((!s.is_empty()).then_some(s)),
        Some(_) => Err(EventError::WrongFieldType {
            field,
            expected: "a string",
        }),
    }
}

/// `properties.<key>` when it is a non-empty string (page/screen name fallback).
fn property_text(properties: &Map<String, Value>, key: &str) -> Option<String> {
    match properties.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn object_field(
    value: Option<Value>,
    field: &'static str,
) -> Result<Map<String, Value>, EventError> {
    match value {
        None => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(EventError::WrongFieldType {
            field,
            expected: "an object",
        }),
    }
}

fn timestamp_field(
    value: Option<Value>,
    field: &'static str,
) -> Result<Option<Timestamp>, EventError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => match Timestamp::parse(&s) {
            Ok(t) => Ok(Some(t)),
            Err(_) => Err(EventError::BadTimestamp {
                field,
                value: quote(&Value::String(s).to_string()),
            }),
        },
        Some(other) => Err(EventError::BadTimestamp {
            field,
            value: quote(&other.to_string()),
        }),
    }
}

/// Shortens a JSON rendering for an error message.
fn quote(json: &str) -> String {
    match json.char_indices().nth(MAX_QUOTED_CHARS) {
        None => json.to_owned(),
        Some((end, _)) => format!("{}…", &json[..end]),
    }
}

/// A JSON number as an id, the way JavaScript's `String(n)` prints it: integral floats
/// (`42.0`, `1e3`) lose their fraction.
fn number_to_string(n: &Number) -> String {
    if n.is_f64() {
        if let Some(f) = n.as_f64() {
            if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                return (f as i64).to_string();
            }
        }
    }
    n.to_string()
}

// ---------------------------------------------------------------------------------------------
// Single-pass readers
// ---------------------------------------------------------------------------------------------

/// A field whose JSON type is checked by the engine rather than by serde, so that a wrong
/// type becomes a precise [`EventError::WrongFieldType`] instead of an opaque serde error.
enum Shaped<T> {
    Ok(T),
    WrongType,
}

/// The fields of a call (or of a batch envelope) that the engine reads. Values are kept as
/// loose JSON so their types can be checked with precise errors; `null` reads as absent.
#[derive(Default)]
struct RawCall<'a> {
    call_type: Option<Value>,
    message_id: Option<Value>,
    user_id: Option<Value>,
    anonymous_id: Option<Value>,
    event: Option<Value>,
    group_id: Option<Value>,
    previous_id: Option<Value>,
    name: Option<Value>,
    category: Option<Value>,
    timestamp: Option<Value>,
    original_timestamp: Option<Value>,
    sent_at: Option<Value>,
    received_at: Option<Value>,
    properties: Option<Value>,
    traits: Option<Value>,
    context: Option<Shaped<RawContext>>,
    batch: Option<Shaped<Vec<&'a RawValue>>>,
}

/// The keys of `context` the engine reads; the rest of it is skipped unallocated.
#[derive(Default, Clone)]
struct RawContext {
    traits: Option<Value>,
    group_id: Option<Value>,
}

#[derive(serde::Deserialize)]
#[serde(field_identifier)]
enum CallField {
    #[serde(rename = "type")]
    Type,
    #[serde(rename = "messageId")]
    MessageId,
    #[serde(rename = "userId")]
    UserId,
    #[serde(rename = "anonymousId")]
    AnonymousId,
    #[serde(rename = "event")]
    Event,
    #[serde(rename = "groupId")]
    GroupId,
    #[serde(rename = "previousId")]
    PreviousId,
    #[serde(rename = "name")]
    Name,
    #[serde(rename = "category")]
    Category,
    #[serde(rename = "timestamp")]
    Timestamp,
    #[serde(rename = "originalTimestamp")]
    OriginalTimestamp,
    #[serde(rename = "sentAt")]
    SentAt,
    #[serde(rename = "receivedAt")]
    ReceivedAt,
    #[serde(rename = "properties")]
    Properties,
    #[serde(rename = "traits")]
    Traits,
    #[serde(rename = "context")]
    Context,
    #[serde(rename = "batch")]
    Batch,
    #[serde(other)]
    Other,
}

#[derive(serde::Deserialize)]
#[serde(field_identifier)]
enum ContextField {
    #[serde(rename = "traits")]
    Traits,
    #[serde(rename = "groupId")]
    GroupId,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for RawCall<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CallVisitor;

        impl<'de> Visitor<'de> for CallVisitor {
            type Value = RawCall<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // Duplicate keys: the last one wins, as in JavaScript's JSON.parse.
                let mut call = RawCall::default();
                while let Some(field) = map.next_key::<CallField>()? {
                    match field {
                        CallField::Type => call.call_type = map.next_value()?,
                        CallField::MessageId => call.message_id = map.next_value()?,
                        CallField::UserId => call.user_id = map.next_value()?,
                        CallField::AnonymousId => call.anonymous_id = map.next_value()?,
                        CallField::Event => call.event = map.next_value()?,
                        CallField::GroupId => call.group_id = map.next_value()?,
                        CallField::PreviousId => call.previous_id = map.next_value()?,
                        CallField::Name => call.name = map.next_value()?,
                        CallField::Category => call.category = map.next_value()?,
                        CallField::Timestamp => call.timestamp = map.next_value()?,
                        CallField::OriginalTimestamp => {
                            call.original_timestamp = map.next_value()?
                        }
                        CallField::SentAt => call.sent_at = map.next_value()?,
                        CallField::ReceivedAt => call.received_at = map.next_value()?,
                        CallField::Properties => call.properties = map.next_value()?,
                        CallField::Traits => call.traits = map.next_value()?,
                        CallField::Context => {
                            call.context = map.next_value::<ShapedContext>()?.0;
                        }
                        CallField::Batch => call.batch = map.next_value::<ShapedBatch<'de>>()?.0,
                        CallField::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(call)
            }
        }

        deserializer.deserialize_map(CallVisitor)
    }
}

/// Reads `context`: `None` for null, `WrongType` for anything but an object.
#[derive(Default)]
struct ShapedContext(Option<Shaped<RawContext>>);

/// Reads `batch`: `None` for null, `WrongType` for anything but an array; items stay raw.
#[derive(Default)]
struct ShapedBatch<'a>(Option<Shaped<Vec<&'a RawValue>>>);

/// Consumes a value of the wrong JSON type so the parse can go on.
macro_rules! wrong_type_visits {
    ($value:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

impl<'de> Deserialize<'de> for ShapedContext {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContextVisitor;

        impl<'de> Visitor<'de> for ContextVisitor {
            type Value = ShapedContext;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            wrong_type_visits!(ShapedContext(Some(Shaped::WrongType)));

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ShapedContext(Some(Shaped::WrongType)))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut context = RawContext::default();
                while let Some(field) = map.next_key::<ContextField>()? {
                    match field {
                        ContextField::Traits => context.traits = map.next_value()?,
                        ContextField::GroupId => context.group_id = map.next_value()?,
                        ContextField::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(ShapedContext(Some(Shaped::Ok(context))))
            }
        }

        deserializer.deserialize_any(ContextVisitor)
    }
}

impl<'de> Deserialize<'de> for ShapedBatch<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BatchVisitor;

        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = ShapedBatch<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            wrong_type_visits!(ShapedBatch(Some(Shaped::WrongType)));

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<&'de RawValue>()? {
                    items.push(item);
                }
                Ok(ShapedBatch(Some(Shaped::Ok(items))))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ShapedBatch(Some(Shaped::WrongType)))
            }
        }

        deserializer.deserialize_any(BatchVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn call(value: Value) -> Result<Event, EventError> {
        parse_call(value.to_string().as_bytes(), None, None)
    }

    fn track() -> Value {
        json!({
            "type": "track",
            "event": "Report Exported",
            "userId": "u1",
            "messageId": "m1",
            "timestamp": "2026-11-23T07:40:03.123Z",
            "properties": {"format": "csv"},
        })
    }

    fn with(mut base: Value, key: &str, value: Value) -> Value {
        base.as_object_mut().unwrap().insert(key.to_owned(), value);
        base
    }

    fn without(mut base: Value, key: &str) -> Value {
        base.as_object_mut().unwrap().remove(key);
        base
    }

    #[test]
    fn events_are_send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Event>();
        check::<EventError>();
        check::<MessageId>();
    }

    #[test]
    fn parses_a_track_call() {
        let e = call(track()).unwrap();
        assert_eq!(e.message_id.as_str(), "m1");
        assert_eq!(e.user_id.as_deref(), Some("u1"));
        assert_eq!(e.anonymous_id, None);
        assert_eq!(
            e.kind,
            EventKind::Track {
                event: "Report Exported".into()
            }
        );
        assert_eq!(e.type_name(), "track");
        assert_eq!(e.name(), Some("Report Exported"));
        assert_eq!(e.timestamp, ts("2026-11-23T07:40:03.123Z"));
        assert_eq!(e.received_at, None);
        assert_eq!(e.properties["format"], "csv");
        assert!(e.traits.is_empty());
        assert_eq!(e.account_id(), None);
        assert_eq!(e.user_key(), "u1");
    }

    #[test]
    fn parses_every_type_in_any_case() {
        let base = json!({"anonymousId": "a1", "timestamp": "2026-11-23T00:00:00Z"});
        let cases = [
            (json!({"type": "TRACK", "event": "E"}), "track"),
            (json!({"type": "Identify"}), "identify"),
            (json!({"type": "group", "groupId": "acme"}), "group"),
            (json!({"type": "page", "name": "Pricing"}), "page"),
            (json!({"type": "screen", "name": "Home"}), "screen"),
            (json!({"type": "alias", "previousId": "old"}), "alias"),
        ];
        for (extra, expected) in cases {
            let mut v = base.clone();
            for (k, val) in extra.as_object().unwrap() {
                v = with(v, k, val.clone());
            }
            let e = call(v).unwrap();
            assert_eq!(e.type_name(), expected);
            assert_eq!(e.user_key(), "a1");
        }
    }

    #[test]
    fn page_and_screen_names() {
        let page = json!({"type": "page", "anonymousId": "a", "timestamp": "2026-01-01",
                          "name": "Pricing", "category": "Docs"});
        let e = call(page).unwrap();
        assert_eq!(e.name(), Some("Pricing"));
        assert_eq!(
            e.kind,
            EventKind::Page {
                name: Some("Pricing".into()),
                category: Some("Docs".into())
            }
        );
        let unnamed = json!({"type": "screen", "anonymousId": "a", "timestamp": "2026-01-01"});
        assert_eq!(call(unnamed).unwrap().name(), None);
        // analytics.js also puts the name into properties; used when the top level has none.
        let in_props = json!({"type": "page", "anonymousId": "a", "timestamp": "2026-01-01",
                              "properties": {"name": "Signup", "category": "Funnel"}});
        let e = call(in_props).unwrap();
        assert_eq!(
            e.kind,
            EventKind::Page {
                name: Some("Signup".into()),
                category: Some("Funnel".into())
            }
        );
        let wrong =
            json!({"type": "page", "anonymousId": "a", "timestamp": "2026-01-01", "name": 3});
        assert_eq!(
            call(wrong).unwrap_err(),
            EventError::WrongFieldType {
                field: "name",
                expected: "a string"
            }
        );
    }

    // ---- rejections ---------------------------------------------------------------------

    #[test]
    fn rejects_invalid_json() {
        let err = parse_call(b"{\"type\": \"track\",", None, None).unwrap_err();
        assert!(matches!(err, EventError::InvalidJson(_)), "{err:?}");
        assert_eq!(err.code(), "invalid_json");
        assert!(err.to_string().starts_with("the payload is not valid JSON"));
        assert!(matches!(
            parse_call(b"", None, None),
            Err(EventError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_call(b"{} trailing", None, None),
            Err(EventError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_payload(b"nope", None),
            Err(EventError::InvalidJson(_))
        ));
    }

    #[test]
    fn rejects_non_objects() {
        for raw in [&b"[1, 2]"[..], b"\"track\"", b"42", b"null", b"true"] {
            assert_eq!(parse_call(raw, None, None), Err(EventError::NotAnObject));
            assert_eq!(parse_payload(raw, None), Err(EventError::NotAnObject));
        }
        assert_eq!(EventError::NotAnObject.code(), "not_an_object");
    }

    #[test]
    fn rejects_missing_and_unknown_types() {
        let err = call(without(track(), "type")).unwrap_err();
        assert_eq!(err, EventError::MissingType);
        assert_eq!(err.code(), "missing_type");
        assert_eq!(
            call(with(track(), "type", json!(""))),
            Err(EventError::MissingType)
        );
        let err = call(with(track(), "type", json!("purchase"))).unwrap_err();
        assert_eq!(err, EventError::UnknownType("purchase".into()));
        assert_eq!(err.code(), "unknown_type");
        assert!(err.to_string().contains("`purchase`"));
        assert!(err
            .to_string()
            .contains("track, identify, group, page, screen, alias"));
        assert_eq!(
            call(with(track(), "type", json!(1))),
            Err(EventError::WrongFieldType {
                field: "type",
                expected: "a string"
            })
        );
    }

    #[test]
    fn rejects_missing_identity() {
        let err = call(without(track(), "userId")).unwrap_err();
        assert_eq!(err, EventError::MissingIdentity);
        assert_eq!(err.code(), "missing_identity");
        assert!(err.to_string().contains("`userId`"));
        assert!(err.to_string().contains("`anonymousId`"));
        // Empty strings and nulls count as missing.
        let empty = with(
            with(track(), "userId", json!("")),
            "anonymousId",
            json!(null),
        );
        assert_eq!(call(empty), Err(EventError::MissingIdentity));
        let wrong = with(track(), "userId", json!({"id": 1}));
        assert_eq!(
            call(wrong),
            Err(EventError::WrongFieldType {
                field: "userId",
                expected: "a string or a number"
            })
        );
    }

    #[test]
    fn numeric_ids_become_strings() {
        let e = call(with(track(), "userId", json!(12345))).unwrap();
        assert_eq!(e.user_id.as_deref(), Some("12345"));
        assert_eq!(e.user_key(), "12345");
        let e = call(with(without(track(), "userId"), "anonymousId", json!(7.0))).unwrap();
        assert_eq!(e.anonymous_id.as_deref(), Some("7"));
        assert_eq!(e.user_key(), "7");
        let e = call(with(track(), "userId", json!(1.5))).unwrap();
        assert_eq!(e.user_id.as_deref(), Some("1.5"));
        let g = json!({"type": "group", "userId": "u", "groupId": 42, "timestamp": "2026-01-01"});
        assert_eq!(call(g).unwrap().account_id(), Some("42"));
    }

    #[test]
    fn anonymous_id_is_the_key_only_without_user_id() {
        let both = with(track(), "anonymousId", json!("anon"));
        assert_eq!(call(both).unwrap().user_key(), "u1");
        let anon = with(without(track(), "userId"), "anonymousId", json!("anon"));
        assert_eq!(call(anon).unwrap().user_key(), "anon");
    }

    #[test]
    fn rejects_track_without_event() {
        let err = call(without(track(), "event")).unwrap_err();
        assert_eq!(err, EventError::TrackWithoutEvent);
        assert_eq!(err.code(), "track_without_event");
        assert_eq!(
            call(with(track(), "event", json!(""))),
            Err(EventError::TrackWithoutEvent)
        );
        assert_eq!(
            call(with(track(), "event", json!(null))),
            Err(EventError::TrackWithoutEvent)
        );
        assert_eq!(
            call(with(track(), "event", json!(["x"]))),
            Err(EventError::WrongFieldType {
                field: "event",
                expected: "a string"
            })
        );
    }

    #[test]
    fn rejects_group_without_group_id() {
        let g = json!({"type": "group", "userId": "u", "timestamp": "2026-01-01"});
        let err = call(g.clone()).unwrap_err();
        assert_eq!(err, EventError::GroupWithoutGroupId);
        assert_eq!(err.code(), "group_without_group_id");
        assert_eq!(
            call(with(g, "groupId", json!(""))),
            Err(EventError::GroupWithoutGroupId)
        );
    }

    #[test]
    fn rejects_alias_without_previous_id() {
        let a = json!({"type": "alias", "userId": "u", "timestamp": "2026-01-01"});
        let err = call(a.clone()).unwrap_err();
        assert_eq!(err, EventError::AliasWithoutPreviousId);
        assert_eq!(err.code(), "alias_without_previous_id");
        let ok = call(with(a, "previousId", json!("anon-1"))).unwrap();
        assert_eq!(
            ok.kind,
            EventKind::Alias {
                previous_id: "anon-1".into()
            }
        );
        assert_eq!(ok.name(), None);
    }

    #[test]
    fn message_id_length_limit_counts_characters() {
        let ok = "a".repeat(99);
        let e = call(with(track(), "messageId", json!(ok))).unwrap();
        assert_eq!(e.message_id.as_str(), ok);

        let err = call(with(track(), "messageId", json!("a".repeat(100)))).unwrap_err();
        assert_eq!(err, EventError::MessageIdTooLong { chars: 100 });
        assert_eq!(err.code(), "message_id_too_long");
        assert!(err.to_string().contains("100 characters"));

        // 99 characters but 198 bytes: accepted.
        let wide = "é".repeat(99);
        assert!(wide.len() > 100);
        assert!(call(with(track(), "messageId", json!(wide))).is_ok());
        assert_eq!(
            MessageId::parse("é".repeat(100)),
            Err(EventError::MessageIdTooLong { chars: 100 })
        );
    }

    #[test]
    fn message_id_constructors() {
        assert_eq!(MessageId::parse(""), Err(EventError::EmptyMessageId));
        assert_eq!(EventError::EmptyMessageId.code(), "empty_message_id");
        assert_eq!(
            MessageId::try_from(String::from("m")).unwrap().as_str(),
            "m"
        );
        assert_eq!("m".parse::<MessageId>().unwrap().to_string(), "m");
        let id: MessageId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(id.as_str(), "abc");
        assert!(serde_json::from_str::<MessageId>("\"\"").is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"abc\"");
        assert_eq!(
            call(with(track(), "messageId", json!({}))),
            Err(EventError::WrongFieldType {
                field: "messageId",
                expected: "a string"
            })
        );
        let e = call(with(track(), "messageId", json!(17))).unwrap();
        assert_eq!(e.message_id.as_str(), "17");
    }

    #[test]
    fn size_limit_is_32_kib() {
        fn sized(total: usize) -> Vec<u8> {
            let base = track().to_string();
            // `,"pad":"<n>"` adds 9 + n bytes before the closing brace.
            let pad = "x".repeat(total - base.len() - 9);
            let raw = format!("{},\"pad\":\"{}\"}}", &base[..base.len() - 1], pad);
            assert_eq!(raw.len(), total);
            raw.into_bytes()
        }
        let small = sized(31 * 1024);
        assert!(parse_call(&small, None, None).is_ok());
        let exact = sized(MAX_EVENT_BYTES);
        assert!(parse_call(&exact, None, None).is_ok());
        let over = sized(MAX_EVENT_BYTES + 1);
        assert_eq!(
            parse_call(&over, None, None),
            Err(EventError::TooLarge { bytes: 32769 })
        );
        let big = sized(33 * 1024);
        let err = parse_call(&big, None, None).unwrap_err();
        assert_eq!(err, EventError::TooLarge { bytes: 33 * 1024 });
        assert_eq!(err.code(), "too_large");
        assert!(err.to_string().contains("33792 bytes"));
        assert!(err.to_string().contains("32768"));
        // Through parse_payload a lone oversized call is a per-call rejection.
        assert_eq!(
            parse_payload(&big, None).unwrap(),
            vec![Err(EventError::TooLarge { bytes: 33 * 1024 })]
        );
    }

    #[test]
    fn rejects_bad_timestamps() {
        for field in ["timestamp", "originalTimestamp", "sentAt", "receivedAt"] {
            let err = call(with(track(), field, json!("last tuesday"))).unwrap_err();
            assert_eq!(
                err,
                EventError::BadTimestamp {
                    field: match field {
                        "timestamp" => "timestamp",
                        "originalTimestamp" => "originalTimestamp",
                        "sentAt" => "sentAt",
                        _ => "receivedAt",
                    },
                    value: "\"last tuesday\"".into()
                }
            );
            assert_eq!(err.code(), "bad_timestamp");
            assert!(err.to_string().contains(field));
            assert!(err.to_string().contains("last tuesday"));
        }
        // A zone-less time and a number are rejected too.
        assert!(matches!(
            call(with(track(), "timestamp", json!("2026-11-23T07:40:03"))),
            Err(EventError::BadTimestamp {
                field: "timestamp",
                ..
            })
        ));
        assert_eq!(
            call(with(track(), "timestamp", json!(1_700_000_000_000_i64))),
            Err(EventError::BadTimestamp {
                field: "timestamp",
                value: "1700000000000".into()
            })
        );
        // A huge value is quoted shortened.
        let err = call(with(track(), "sentAt", json!("9".repeat(500)))).unwrap_err();
        assert!(err.to_string().len() < 300);
        // null means absent.
        assert!(call(with(track(), "sentAt", json!(null))).is_ok());
    }

    #[test]
    fn rejects_calls_without_any_time() {
        let err = call(without(track(), "timestamp")).unwrap_err();
        assert_eq!(err, EventError::NoTimestamp);
        assert_eq!(err.code(), "no_timestamp");
        // sentAt alone is not an event time.
        let sent_only = with(without(track(), "timestamp"), "sentAt", json!("2026-01-01"));
        assert_eq!(call(sent_only), Err(EventError::NoTimestamp));
    }

    #[test]
    fn rejects_wrongly_typed_objects() {
        for field in ["properties", "context"] {
            let err = call(with(track(), field, json!([1]))).unwrap_err();
            assert_eq!(err.code(), "wrong_field_type");
            assert!(err.to_string().contains(field));
            assert!(err.to_string().contains("an object"));
        }
        let identify = json!({"type": "identify", "userId": "u", "timestamp": "2026-01-01",
                              "traits": "vip"});
        assert_eq!(
            call(identify),
            Err(EventError::WrongFieldType {
                field: "traits",
                expected: "an object"
            })
        );
        assert_eq!(
            call(with(track(), "context", json!({"traits": 5}))),
            Err(EventError::WrongFieldType {
                field: "context.traits",
                expected: "an object"
            })
        );
        assert_eq!(
            call(with(track(), "context", json!({"groupId": true}))),
            Err(EventError::WrongFieldType {
                field: "context.groupId",
                expected: "a string or a number"
            })
        );
    }

    // ---- time ---------------------------------------------------------------------------

    #[test]
    fn clock_skew_is_corrected_like_segment() {
        // The device clock is 1 hour 5 seconds fast: it stamped the event at 12:00:00 and sent
        // it at 12:00:10 (device time); the server received it at 10:59:58 (true time).
        // Corrected: received - (sentAt - originalTimestamp) = 10:59:58 - 10s = 10:59:48.
        let raw = json!({
            "type": "track", "event": "E", "userId": "u",
            "originalTimestamp": "2026-03-01T12:00:00.000Z",
            "sentAt": "2026-03-01T12:00:10.000Z",
            "receivedAt": "2026-03-01T10:59:58.000Z",
        });
        let e = call(raw.clone()).unwrap();
        assert_eq!(e.timestamp, ts("2026-03-01T10:59:48.000Z"));
        assert_eq!(e.received_at, Some(ts("2026-03-01T10:59:58.000Z")));

        // Same arithmetic in raw milliseconds: 5_000 - (3_000 - 1_000) = 3_000.
        let ms = json!({"type": "identify", "userId": "u",
            "timestamp": "1970-01-01T00:00:01Z", "sentAt": "1970-01-01T00:00:03Z",
            "receivedAt": "1970-01-01T00:00:05Z"});
        assert_eq!(call(ms).unwrap().timestamp, Timestamp(3_000));

        // The server's receive time overrides the body's receivedAt.
        let server = ts("2026-03-01T11:00:00.000Z");
        let e = parse_call(raw.to_string().as_bytes(), None, Some(server)).unwrap();
        assert_eq!(e.received_at, Some(server));
        assert_eq!(e.timestamp, ts("2026-03-01T10:59:50.000Z"));

        // originalTimestamp is the device time when both are present.
        let both = with(raw, "timestamp", json!("2026-03-01T12:00:05.000Z"));
        assert_eq!(
            call(both).unwrap().timestamp,
            ts("2026-03-01T10:59:48.000Z")
        );
    }

    #[test]
    fn time_fallbacks_without_skew_correction() {
        let base = json!({"type": "track", "event": "E", "userId": "u"});
        // timestamp wins over originalTimestamp when no correction is possible.
        let v = with(
            with(base.clone(), "timestamp", json!("2026-01-02T00:00:00Z")),
            "originalTimestamp",
            json!("2026-01-01T00:00:00Z"),
        );
        assert_eq!(call(v).unwrap().timestamp, ts("2026-01-02T00:00:00Z"));
        let v = with(
            base.clone(),
            "originalTimestamp",
            json!("2026-01-01T00:00:00Z"),
        );
        assert_eq!(call(v).unwrap().timestamp, ts("2026-01-01T00:00:00Z"));
        let v = with(base.clone(), "receivedAt", json!("2026-01-03T00:00:00Z"));
        assert_eq!(call(v).unwrap().timestamp, ts("2026-01-03T00:00:00Z"));
        // With only the server's receive time, that is the event time.
        let now = ts("2026-01-04T00:00:00Z");
        let e = parse_call(base.to_string().as_bytes(), None, Some(now)).unwrap();
        assert_eq!(e.timestamp, now);
        // sentAt without receivedAt: no correction.
        let v = with(
            with(base, "timestamp", json!("2026-01-02T00:00:00Z")),
            "sentAt",
            json!("2026-01-02T00:00:09Z"),
        );
        assert_eq!(call(v).unwrap().timestamp, ts("2026-01-02T00:00:00Z"));
    }

    // ---- message ids --------------------------------------------------------------------

    #[test]
    fn auto_message_id_is_deterministic() {
        let raw = without(track(), "messageId").to_string();
        let a = parse_call(raw.as_bytes(), None, None).unwrap();
        let b = parse_call(raw.as_bytes(), None, None).unwrap();
        assert_eq!(a.message_id, b.message_id);
        assert!(a.message_id.as_str().starts_with("auto-"));
        assert_eq!(a.message_id.as_str().len(), 5 + 32);
        let digest = hex::encode(Sha256::digest(raw.as_bytes()));
        assert_eq!(a.message_id.as_str(), format!("auto-{}", &digest[..32]));

        // A trailing newline (JSONL) does not change it.
        let line = format!("{raw}\r\n");
        let c = parse_call(line.as_bytes(), None, None).unwrap();
        assert_eq!(c.message_id, a.message_id);

        let other = with(without(track(), "messageId"), "event", json!("Other")).to_string();
        let d = parse_call(other.as_bytes(), None, None).unwrap();
        assert_ne!(d.message_id, a.message_id);

        // An empty messageId is treated as absent.
        let empty = with(track(), "messageId", json!("")).to_string();
        let e = parse_call(empty.as_bytes(), None, None).unwrap();
        assert_eq!(e.message_id, MessageId::from_content(empty.as_bytes()));
    }

    // ---- call type from the URL ---------------------------------------------------------

    #[test]
    fn call_type_from_url() {
        let body = without(track(), "type").to_string();
        let e = parse_call(body.as_bytes(), Some("track"), None).unwrap();
        assert_eq!(e.type_name(), "track");
        // Agreeing types in any case are fine.
        let body = with(track(), "type", json!("Track")).to_string();
        assert!(parse_call(body.as_bytes(), Some("TRACK"), None).is_ok());
        // Disagreeing types are rejected.
        let body = track().to_string();
        let err = parse_call(body.as_bytes(), Some("identify"), None).unwrap_err();
        assert_eq!(
            err,
            EventError::TypeMismatch {
                url: "identify".into(),
                body: "track".into()
            }
        );
        assert_eq!(err.code(), "type_mismatch");
        assert!(err.to_string().contains("`track`"));
        assert!(err.to_string().contains("`identify`"));
        // An unknown endpoint, or an unknown body type on a known endpoint.
        assert_eq!(
            parse_call(body.as_bytes(), Some("batchy"), None),
            Err(EventError::UnknownType("batchy".into()))
        );
        let body = with(track(), "type", json!("purchase")).to_string();
        assert_eq!(
            parse_call(body.as_bytes(), Some("track"), None),
            Err(EventError::UnknownType("purchase".into()))
        );
        // The URL's type decides which fields are required.
        let body = json!({"userId": "u", "timestamp": "2026-01-01"}).to_string();
        assert_eq!(
            parse_call(body.as_bytes(), Some("group"), None),
            Err(EventError::GroupWithoutGroupId)
        );
    }

    // ---- traits, context, accounts ------------------------------------------------------

    #[test]
    fn traits_come_from_the_right_place() {
        let identify = json!({"type": "identify", "userId": "u", "timestamp": "2026-01-01",
            "traits": {"plan": "pro"}, "context": {"traits": {"plan": "free"}}});
        assert_eq!(call(identify.clone()).unwrap().traits["plan"], "pro");
        let fallback = without(identify, "traits");
        assert_eq!(call(fallback).unwrap().traits["plan"], "free");
        let group = json!({"type": "group", "userId": "u", "groupId": "g", "timestamp": "2026-01-01",
            "traits": {"employees": 50}});
        assert_eq!(call(group).unwrap().traits["employees"], 50);
        // Other calls read context.traits and ignore a top-level traits.
        let t = with(
            with(track(), "traits", json!({"plan": "top"})),
            "context",
            json!({"traits": {"plan": "ctx"}, "ip": "1.2.3.4"}),
        );
        let e = call(t).unwrap();
        assert_eq!(e.traits["plan"], "ctx");
        assert_eq!(e.traits.len(), 1);
    }

    #[test]
    fn account_id_from_group_call_or_context() {
        let t = with(track(), "context", json!({"groupId": "acme"}));
        let e = call(t).unwrap();
        assert_eq!(e.context_group_id.as_deref(), Some("acme"));
        assert_eq!(e.account_id(), Some("acme"));

        let t = with(track(), "context", json!({"groupId": 991}));
        assert_eq!(call(t).unwrap().account_id(), Some("991"));

        assert_eq!(call(track()).unwrap().account_id(), None);

        // A group call names its groupId, even when context names another account.
        let g = json!({"type": "group", "userId": "u", "groupId": "initech",
                       "timestamp": "2026-01-01", "context": {"groupId": "acme"}});
        let e = call(g).unwrap();
        assert_eq!(e.account_id(), Some("initech"));
        assert_eq!(e.context_group_id.as_deref(), Some("acme"));
        assert_eq!(e.name(), None);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let noisy = with(
            with(
                with(
                    track(),
                    "integrations",
                    json!({"All": true, "Mixpanel": false}),
                ),
                "version",
                json!(2),
            ),
            "channel",
            json!("server"),
        );
        let noisy = with(
            noisy,
            "context",
            json!({"library": {"name": "analytics-node"}, "page": ["weird"], "groupId": "g"}),
        );
        let e = call(noisy).unwrap();
        assert_eq!(e.account_id(), Some("g"));
    }

    #[test]
    fn duplicate_keys_last_wins() {
        let raw =
            br#"{"type":"track","event":"A","event":"B","userId":"u","timestamp":"2026-01-01"}"#;
        assert_eq!(parse_call(raw, None, None).unwrap().name(), Some("B"));
    }

    #[test]
    fn every_error_has_a_distinct_code() {
        let all = [
            EventError::InvalidJson(String::new()),
            EventError::NotAnObject,
            EventError::MissingType,
            EventError::UnknownType(String::new()),
            EventError::TypeMismatch {
                url: String::new(),
                body: String::new(),
            },
            EventError::MissingIdentity,
            EventError::TrackWithoutEvent,
            EventError::GroupWithoutGroupId,
            EventError::AliasWithoutPreviousId,
            EventError::MessageIdTooLong { chars: 0 },
            EventError::EmptyMessageId,
            EventError::TooLarge { bytes: 0 },
            EventError::BadTimestamp {
                field: "timestamp",
                value: String::new(),
            },
            EventError::NoTimestamp,
            EventError::WrongFieldType {
                field: "x",
                expected: "y",
            },
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(EventError::code).collect();
        assert_eq!(codes.len(), all.len());
        for e in &all {
            let c = e.code();
            assert!(
                c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c}"
            );
            assert!(!e.to_string().is_empty());
        }
    }

    // ---- payloads and batches -----------------------------------------------------------

    #[test]
    fn payload_with_a_single_call_matches_parse_call() {
        let raw = without(track(), "messageId").to_string();
        let now = ts("2026-11-23T08:00:00Z");
        let events = parse_payload(raw.as_bytes(), Some(now)).unwrap();
        assert_eq!(events, vec![parse_call(raw.as_bytes(), None, Some(now))]);
        let bad = without(track(), "event").to_string();
        assert_eq!(
            parse_payload(bad.as_bytes(), None).unwrap(),
            vec![Err(EventError::TrackWithoutEvent)]
        );
    }

    #[test]
    fn batch_merges_context_and_inherits_sent_at() {
        let raw = json!({
            "batch": [
                {"type": "track", "event": "A", "userId": "u1", "messageId": "a",
                 "originalTimestamp": "2026-03-01T12:00:00Z",
                 "context": {"groupId": "item-account"}},
                {"type": "track", "event": "B", "userId": "u2", "messageId": "b",
                 "originalTimestamp": "2026-03-01T12:00:00Z",
                 "sentAt": "2026-03-01T12:00:20Z",
                 "context": {"traits": {"plan": "item"}}},
                {"type": "identify", "userId": "u3", "messageId": "c",
                 "timestamp": "2026-03-01T12:00:00Z"},
            ],
            "context": {"groupId": "batch-account", "traits": {"plan": "batch"},
                        "library": {"name": "analytics-python"}},
            "integrations": {"All": true},
            "sentAt": "2026-03-01T12:00:10Z",
            "writeKey": "wk",
        })
        .to_string();
        let received = ts("2026-03-01T12:00:30Z");
        let events: Vec<Event> = parse_payload(raw.as_bytes(), Some(received))
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(events.len(), 3);

        // Item 1: its own groupId wins, batch traits fill in; inherits batch sentAt
        // (10 s of skew): 12:00:30 - (12:00:10 - 12:00:00) = 12:00:20.
        assert_eq!(events[0].account_id(), Some("item-account"));
        assert_eq!(events[0].traits["plan"], "batch");
        assert_eq!(events[0].timestamp, ts("2026-03-01T12:00:20Z"));
        // Item 2: its own traits win, batch groupId fills in; its own sentAt (20 s).
        assert_eq!(events[1].account_id(), Some("batch-account"));
        assert_eq!(events[1].traits["plan"], "item");
        assert_eq!(events[1].timestamp, ts("2026-03-01T12:00:10Z"));
        // Item 3: identify without top-level traits falls back to the merged context.traits.
        assert_eq!(events[2].traits["plan"], "batch");
        assert_eq!(events[2].account_id(), Some("batch-account"));
        assert!(events.iter().all(|e| e.received_at == Some(received)));
    }

    #[test]
    fn batch_with_a_bad_item_keeps_the_others() {
        let good = without(track(), "messageId");
        let big = with(track(), "pad", json!("x".repeat(MAX_EVENT_BYTES)));
        let raw = json!({"batch": [
            good.clone(),
            without(track(), "userId"),
            "not a call",
            big,
            with(track(), "type", json!("purchase")),
            track(),
        ]})
        .to_string();
        let results = parse_payload(raw.as_bytes(), None).unwrap();
        assert_eq!(results.len(), 6);
        // The auto id is computed on the item's own raw JSON.
        let good_raw = good.to_string();
        assert_eq!(
            results[0].as_ref().unwrap().message_id,
            MessageId::from_content(good_raw.as_bytes())
        );
        assert_eq!(results[1], Err(EventError::MissingIdentity));
        assert_eq!(results[2], Err(EventError::NotAnObject));
        assert!(matches!(results[3], Err(EventError::TooLarge { .. })));
        assert_eq!(results[4], Err(EventError::UnknownType("purchase".into())));
        assert_eq!(results[5].as_ref().unwrap().message_id.as_str(), "m1");
    }

    #[test]
    fn batch_item_size_and_auto_id_use_the_item_bytes() {
        // Whitespace inside the batch is part of the item's raw JSON; the context merge is not.
        let item = r#"{ "type": "track", "event": "E", "userId": "u", "timestamp": "2026-01-01" }"#;
        let raw = format!(r#"{{"batch": [ {item} ], "context": {{"groupId": "g"}}}}"#);
        let events = parse_payload(raw.as_bytes(), None).unwrap();
        let e = events[0].as_ref().unwrap();
        assert_eq!(e.message_id, MessageId::from_content(item.as_bytes()));
        assert_eq!(e.account_id(), Some("g"));
    }

    #[test]
    fn unusable_batches_fail_as_a_whole() {
        assert_eq!(
            parse_payload(br#"{"batch": {"type": "track"}}"#, None),
            Err(EventError::WrongFieldType {
                field: "batch",
                expected: "an array of calls"
            })
        );
        assert_eq!(
            parse_payload(br#"{"batch": "x"}"#, None),
            Err(EventError::WrongFieldType {
                field: "batch",
                expected: "an array of calls"
            })
        );
        assert_eq!(
            parse_payload(br#"{"batch": [], "context": 3}"#, None),
            Err(EventError::WrongFieldType {
                field: "context",
                expected: "an object"
            })
        );
        assert!(matches!(
            parse_payload(br#"{"batch": [], "sentAt": "soon"}"#, None),
            Err(EventError::BadTimestamp {
                field: "sentAt",
                ..
            })
        ));
        assert!(matches!(
            parse_payload(br#"{"batch": [{"type": "track"}"#, None),
            Err(EventError::InvalidJson(_))
        ));
        assert_eq!(parse_payload(br#"{"batch": []}"#, None), Ok(vec![]));
        // "batch": null is no batch: the payload is read as a single call.
        assert_eq!(
            parse_payload(br#"{"batch": null}"#, None),
            Ok(vec![Err(EventError::MissingType)])
        );
    }

    #[test]
    fn events_serialize() {
        let e = call(with(track(), "context", json!({"groupId": "g"}))).unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["message_id"], "m1");
        assert_eq!(v["timestamp"], "2026-11-23T07:40:03.123Z");
        assert_eq!(v["kind"]["Track"]["event"], "Report Exported");
        assert_eq!(v["context_group_id"], "g");
    }
}
