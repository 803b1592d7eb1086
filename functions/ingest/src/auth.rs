//! Who is sending: the write key (HTTP Basic user name, or `writeKey` in the body) and the
//! tenant it belongs to, with a short-lived cache of positive look-ups for the warm function.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use pql_engine::event::EventError;
use pql_store::tenants::TenantId;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use crate::response::IngestError;

/// A write key as sent by a client. Its `Debug` does not show it, so it cannot end up in a
/// log by accident; [`WriteKey::expose`] is the one way to read it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WriteKey(String);

impl WriteKey {
    /// A non-empty key; `None` for an empty one.
    pub fn new(key: impl Into<String>) -> Option<WriteKey> {
        let key = key.into();
        (!key.is_empty()).then_some(WriteKey(key))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WriteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriteKey(<redacted>)")
    }
}

/// The key from `Authorization: Basic base64(KEY:)`, if the header is there. The password is
/// ignored (Segment's libraries send an empty one). An empty user name counts as no key.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<WriteKey>, IngestError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = |reason| IngestError::MalformedAuthorization { reason };
    let value = value
        .to_str()
        .map_err(|_| malformed("it is not ASCII"))?
        .trim();
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed("only the Basic scheme is accepted"));
    }
    let credentials = credentials.trim();
    let decoded = STANDARD
        .decode(credentials)
        .or_else(|_| STANDARD_NO_PAD.decode(credentials))
        .map_err(|_| malformed("the Basic credentials are not base64"))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| malformed("the Basic credentials are not UTF-8"))?;
    let user = match decoded.split_once(':') {
        Some((user, _password)) => user.to_owned(),
        None => decoded,
    };
    Ok(WriteKey::new(user))
}

/// The top-level `writeKey` of a JSON body, if any. The body is scanned, not built: only the
/// key's value is allocated. A body that is not JSON gets the engine's error for it.
pub fn from_body(body: &[u8]) -> Result<Option<WriteKey>, IngestError> {
    let found = serde_json::from_slice::<FindWriteKey>(body).map_err(|err| {
        if err.is_data() && serde_json::from_slice::<IgnoredAny>(body).is_ok() {
            IngestError::Payload(EventError::NotAnObject)
        } else {
            IngestError::Payload(EventError::InvalidJson(err.to_string()))
        }
    })?;
    match found.0 {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) => Ok(WriteKey::new(key)),
        Some(_) => Err(IngestError::WriteKeyNotAString),
    }
}

/// The last `writeKey` of a JSON object (duplicate keys: the last wins, as in the engine).
struct FindWriteKey(Option<Value>);

impl<'de> serde::Deserialize<'de> for FindWriteKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FindWriteKey;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FindWriteKey, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "writeKey" {
                        found = Some(map.next_value::<Value>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(FindWriteKey(found))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// Positive look-ups of write keys, kept for `ttl` (a revoked key keeps working that long in
/// a warm function). Unknown keys are not cached, so a new key works at once.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<WriteKey, (TenantId, Instant)>>,
}

/// Bound on the cache (one function instance serves a handful of sources).
const MAX_CACHED_KEYS: usize = 1_024;

impl KeyCache {
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &WriteKey) -> Option<TenantId> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some((tenant, at)) if at.elapsed() < self.ttl => Some(tenant.clone()),
            _ => None,
        }
    }

    pub fn insert(&self, key: WriteKey, tenant: TenantId) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_CACHED_KEYS {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= MAX_CACHED_KEYS {
                entries.clear();
            }
        }
        entries.insert(key, (tenant, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn basic(credentials: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode(credentials));
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        headers
    }

    #[test]
    fn basic_user_name_is_the_key() {
        let key = from_headers(&basic("wk_123:")).unwrap().unwrap();
        assert_eq!(key.expose(), "wk_123");
        assert_eq!(
            from_headers(&basic("wk_123:ignored"))
                .unwrap()
                .unwrap()
                .expose(),
            "wk_123"
        );
        assert_eq!(
            from_headers(&basic("wk_123")).unwrap().unwrap().expose(),
            "wk_123"
        );
        assert_eq!(from_headers(&basic(":")).unwrap(), None);
        assert_eq!(from_headers(&HeaderMap::new()).unwrap(), None);
        let mut lower = HeaderMap::new();
        lower.insert(AUTHORIZATION, HeaderValue::from_static("basic d2s6"));
        assert_eq!(from_headers(&lower).unwrap().unwrap().expose(), "wk");
    }

    #[test]
    fn other_schemes_and_garbage_are_refused() {
        for value in ["Bearer abc", "Basic !!!", "Basic", "Basic //8="] {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            assert!(
                matches!(
                    from_headers(&headers),
                    Err(IngestError::MalformedAuthorization { .. })
                ) || value == "Basic",
                "{value}"
            );
        }
    }

    #[test]
    fn write_key_in_the_body() {
        let key = from_body(br#"{"batch": [{"writeKey": "inner"}], "writeKey": "wk"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(key.expose(), "wk");
        assert_eq!(
            from_body(br#"{"writeKey": "a", "writeKey": "b"}"#)
                .unwrap()
                .unwrap()
                .expose(),
            "b"
        );
        assert_eq!(from_body(br#"{"writeKey": ""}"#).unwrap(), None);
        assert_eq!(from_body(br#"{"writeKey": null}"#).unwrap(), None);
        assert!(matches!(
            from_body(br#"{"writeKey": 5}"#),
            Err(IngestError::WriteKeyNotAString)
        ));
        assert!(matches!(
            from_body(b"{"),
            Err(IngestError::Payload(EventError::InvalidJson(_)))
        ));
        assert!(matches!(
            from_body(b"[1]"),
            Err(IngestError::Payload(EventError::NotAnObject))
        ));
    }

    #[test]
    fn keys_do_not_show_in_debug_output() {
        let key = WriteKey::new("wk_secret").unwrap();
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn cache_expires_and_can_be_off() {
        let tenant = TenantId::parse("acme").unwrap();
        let key = WriteKey::new("k").unwrap();
        let cache = KeyCache::new(Duration::from_secs(60));
        assert_eq!(cache.get(&key), None);
        cache.insert(key.clone(), tenant.clone());
        assert_eq!(cache.get(&key), Some(tenant.clone()));
        let off = KeyCache::new(Duration::ZERO);
        off.insert(key.clone(), tenant.clone());
        assert_eq!(off.get(&key), None);
        let short = KeyCache::new(Duration::from_millis(1));
        short.insert(key.clone(), tenant);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.get(&key), None);
    }
}
