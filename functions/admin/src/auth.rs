//! Who is asking: the tenant's admin key, sent as `Authorization: Bearer KEY` or as HTTP Basic
//! (`KEY` as the user name, or as the password with an empty user name). Admin keys are stored
//! as SHA-256 hashes only (`adminkey#<sha256>` in the tenants table); a write key is recognised
//! and refused with `403`, anything else is `401`.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use http::header::AUTHORIZATION;
use http::HeaderMap;
use pql_store::tenants::TenantId;
use pql_store::Store;

use crate::error::AdminError;

/// A key as sent. Its `Debug` does not show it, so it cannot end up in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// The key in the `Authorization` header (`None`: no header).
pub fn from_headers(headers: &HeaderMap) -> Result<Option<Key>, AdminError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = |reason: &str| AdminError::MalformedAuthorization(reason.to_owned());
    let value = value
        .to_str()
        .map_err(|_| malformed("it is not ASCII"))?
        .trim();
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    let key = if scheme.eq_ignore_ascii_case("bearer") {
        credentials.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(credentials)
            .or_else(|_| STANDARD_NO_PAD.decode(credentials))
            .map_err(|_| malformed("the Basic credentials are not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| malformed("the Basic credentials are not UTF-8"))?;
        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        if user.is_empty() { password } else { user }.to_owned()
    } else {
        return Err(malformed("only the Bearer and Basic schemes are accepted"));
    };
    if key.is_empty() {
        return Ok(None);
    }
    Ok(Some(Key(key)))
}

/// The tenant of the request's admin key: `401` without a key or with an unknown one, `403`
/// with a write key (it identifies a tenant, but may only send events).
pub async fn authenticate(store: &Store, headers: &HeaderMap) -> Result<TenantId, AdminError> {
    let Some(key) = from_headers(headers)? else {
        return Err(AdminError::MissingKey);
    };
    if let Some(tenant) = store.tenant_for_admin_key(key.expose()).await? {
        return Ok(tenant);
    }
    if store.tenant_for_write_key(key.expose()).await?.is_some() {
        return Err(AdminError::WriteKey);
    }
    Err(AdminError::UnknownKey)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_keys() {
        let key = |v: &str| from_headers(&headers(v)).unwrap().map(|k| k.0);
        assert_eq!(key("Bearer abc"), Some("abc".into()));
        assert_eq!(key("bearer  abc "), Some("abc".into()));
        assert_eq!(
            key(&format!("Basic {}", STANDARD.encode("abc:"))),
            Some("abc".into())
        );
        assert_eq!(
            key(&format!("Basic {}", STANDARD.encode(":abc"))),
            Some("abc".into())
        );
        assert_eq!(key("Bearer "), None);
        assert!(from_headers(&HeaderMap::new()).unwrap().is_none());
    }

    #[test]
    fn malformed_headers_say_why() {
        let error = |v: &str| from_headers(&headers(v)).unwrap_err().to_string();
        assert!(
            error("Digest x").contains("Bearer and Basic"),
            "{}",
            error("Digest x")
        );
        assert!(error("Basic !!!").contains("not base64"));
    }

    #[test]
    fn keys_do_not_show_in_debug() {
        assert_eq!(format!("{:?}", Key("secret".into())), "Key(<redacted>)");
    }
}
