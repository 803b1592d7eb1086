//! Webhook signatures: HMAC-SHA256 over `"{timestamp}.{body}"`.
//!
//! Every webhook request carries
//!
//! ```text
//! PQL-Signature: t=1767225600,v1=5f2b...e9
//! Idempotency-Key: pql_3f1c...
//! ```
//!
//! where `t` is the Unix time (seconds) of the send and `v1` the lowercase hex HMAC-SHA256 of
//! the bytes `t`, `.`, then the raw request body, keyed with the destination's signing secret.
//! A receiver verifies it by:
//!
//! 1. splitting the header on `,` and each part on the first `=`, taking `t` and every `v1`
//!    (several `v1` appear while a secret is being rotated);
//! 2. rejecting the request if `|now - t|` exceeds its tolerance (we use 300 s): an old
//!    captured request cannot be replayed later;
//! 3. computing HMAC-SHA256(secret, `t + "." + raw body`) over the body bytes *as received*
//!    (before any JSON parsing) and comparing it with each `v1` in constant time;
//! 4. deduplicating on `Idempotency-Key`: a retried or replayed delivery has a new `t` and
//!    signature but the same key.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "PQL-Signature";
/// How far a signature's time may be from the receiver's clock, in seconds.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `PQL-Signature` header value for `body` sent at `timestamp` (Unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature is {age} s away from now (tolerance {tolerance} s): possibly a replay")]
    OutsideWindow { age: i64, tolerance: i64 },
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// Verifies a `PQL-Signature` header (what a receiver does; see the module documentation).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (name, value) = part
            .trim()
            .split_once('=')
            .ok_or(VerifyError::Malformed("a part without `=`"))?;
        match name {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| VerifyError::Malformed("`t` is not a number"))?,
                )
            }
            "v1" => signatures
                .push(hex::decode(value).map_err(|_| VerifyError::Malformed("`v1` is not hex"))?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed("no `t`"))?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed("no `v1`"));
    }
    let age = (now - timestamp).abs();
    if age > tolerance_secs {
        return Err(VerifyError::OutsideWindow {
            age,
            tolerance: tolerance_secs,
        });
    }
    if signatures
        .iter()
        .any(|s| mac(secret, timestamp, body).verify_slice(s).is_ok())
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_within_the_window_only() {
        let header = sign(b"whsec_test", 1_767_225_600, br#"{"a":1}"#);
        assert!(header.starts_with("t=1767225600,v1="));
        assert_eq!(
            verify(b"whsec_test", &header, br#"{"a":1}"#, 1_767_225_700, 300),
            Ok(())
        );
        assert_eq!(
            verify(b"whsec_test", &header, br#"{"a":2}"#, 1_767_225_700, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, br#"{"a":1}"#, 1_767_225_700, 300),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(b"whsec_test", &header, br#"{"a":1}"#, 1_767_226_000, 300),
            Err(VerifyError::OutsideWindow { age: 400, .. })
        ));
        assert!(matches!(
            verify(b"whsec_test", "v1=00", b"", 0, 300),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn a_known_vector() {
        // HMAC-SHA256(key = "secret", "1.{}"), computed independently with openssl:
        // printf '1.{}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign(b"secret", 1, b"{}"),
            "t=1,v1=1122767b193110cfec322b6f199b599edbf608ed087f2d27afb0b97d99523908"
        );
    }
}
