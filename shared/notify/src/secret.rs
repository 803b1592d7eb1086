//! Secrets (webhook URLs, signing secrets) in a type that never prints them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A destination secret: a Slack incoming-webhook URL (the URL *is* the credential), a webhook
/// URL with a token in it, a signing secret. `Debug` and `Display` print `Secret(***)`, so a
/// secret cannot reach a log line through `{:?}` or `{}`; [`Secret::expose`] is the one way to
/// read it, used only where it is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself: only to put it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// Settings are stored (encrypted at rest) with their secrets, so they serialise as is.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("https://hooks.example.com/services/T0/B0/XYZ");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        assert_eq!(format!("{secret}"), "***");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            url: Secret,
        }
        let text = format!(
            "{:?}",
            Holder {
                url: secret.clone()
            }
        );
        assert!(!text.contains("XYZ"), "{text}");
        assert_eq!(
            secret.expose(),
            "https://hooks.example.com/services/T0/B0/XYZ"
        );
    }
}
