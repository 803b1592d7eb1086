//! Conditions on event properties and on user / account traits, and the built-in list of
//! free-mail domains used by fit rules.

use serde_json::{Map, Value};

/// Where a condition reads its value.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// `properties.<path>` of the event (dots walk into nested objects).
    Property(Vec<String>),
    /// `traits.<path>` carried by the event (identify / group traits, or `context.traits`).
    Trait(Vec<String>),
    /// A trait of the account, from `group` calls (last write wins by event time).
    AccountTrait(String),
    /// A trait of any user of the account, from `identify` calls.
    UserTrait(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Exists(bool),
    Contains(String),
    AtLeast(f64),
    AtMost(f64),
    GreaterThan(f64),
    LessThan(f64),
    EmailDomainIn(Vec<String>),
    FreeMail(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub subject: Subject,
    pub op: Op,
}

impl Condition {
    /// Tests the condition on an event's properties and traits. Account and user traits are
    /// not on the event; those conditions are tested by the state with [`Op::test`].
    pub fn test_event(&self, properties: &Map<String, Value>, traits: &Map<String, Value>) -> bool {
        match &self.subject {
            Subject::Property(path) => self.op.test(lookup(properties, path)),
            Subject::Trait(path) | Subject::UserTrait(path) => self.op.test(lookup(traits, path)),
            Subject::AccountTrait(name) => self.op.test(traits.get(name)),
        }
    }
}

/// Walks a dotted path into nested JSON objects.
pub fn lookup<'a>(map: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = map.get(first)?;
    for key in rest {
        value = value.as_object()?.get(key)?;
    }
    Some(value)
}

impl Op {
    /// A missing (or null) value satisfies only `exists = false`: negative operators such as
    /// `not_equals` need a value to compare, so an account without the trait is not "not paying".
    pub fn test(&self, value: Option<&Value>) -> bool {
        let value = value.filter(|v| !v.is_null());
        if let Op::Exists(expected) = self {
            return value.is_some() == *expected;
        }
        let Some(value) = value else { return false };
        match self {
            Op::Exists(_) => unreachable!("handled above"),
            Op::Equals(expected) => json_eq(value, expected),
            Op::NotEquals(expected) => !json_eq(value, expected),
            Op::In(list) => list.iter().any(|e| json_eq(value, e)),
            Op::NotIn(list) => !list.iter().any(|e| json_eq(value, e)),
            Op::Contains(needle) => match value {
                Value::String(s) => s.contains(needle.as_str()),
                Value::Array(items) => items.iter().any(|i| i.as_str() == Some(needle.as_str())),
                _ => false,
            },
            Op::AtLeast(n) => number(value).is_some_and(|v| v >= *n),
            Op::AtMost(n) => number(value).is_some_and(|v| v <= *n),
            Op::GreaterThan(n) => number(value).is_some_and(|v| v > *n),
            Op::LessThan(n) => number(value).is_some_and(|v| v < *n),
            Op::EmailDomainIn(domains) => email_domain(value).is_some_and(|d| {
                domains
                    .iter()
                    // The domain itself or a subdomain of it (no allocation: this runs per event).
                    .any(|want| {
                        d.strip_suffix(want.as_str())
                            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
                    })
            }),
            Op::FreeMail(expected) => {
                email_domain(value).is_some_and(|d| is_free_mail_domain(&d) == *expected)
            }
        }
    }
}

/// Numbers compare by value (1 == 1.0); everything else structurally.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A number, or a string holding one (traits such as `employees` often arrive as "250").
pub fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
        _ => None,
    }
}

/// The lower-cased domain of an e-mail address, or of a bare domain.
pub fn email_domain(value: &Value) -> Option<String> {
    let text = value.as_str()?.trim();
    let domain = text.rsplit_once('@').map_or(text, |(_, d)| d);
    (!domain.is_empty() && domain.contains('.')).then(|| domain.to_ascii_lowercase())
}

/// Consumer mailbox providers: an address there says nothing about the company.
pub const FREE_MAIL_DOMAINS: &[&str] = &[
    "126.com",
    "163.com",
    "aim.com",
    "aliyun.com",
    "aol.com",
    "att.net",
    "bk.ru",
    "btinternet.com",
    "comcast.net",
    "duck.com",
    "fastmail.com",
    "free.fr",
    "gmail.com",
    "gmx.at",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "googlemail.com",
    "hanmail.net",
    "hey.com",
    "hotmail.co.uk",
    "hotmail.com",
    "hotmail.de",
    "hotmail.fr",
    "hotmail.it",
    "icloud.com",
    "inbox.com",
    "interia.pl",
    "laposte.net",
    "libero.it",
    "list.ru",
    "live.co.uk",
    "live.com",
    "live.fr",
    "mac.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "naver.com",
    "o2.pl",
    "orange.fr",
    "outlook.com",
    "outlook.de",
    "pm.me",
    "proton.me",
    "protonmail.com",
    "qq.com",
    "rambler.ru",
    "rediffmail.com",
    "rocketmail.com",
    "sbcglobal.net",
    "seznam.cz",
    "sina.com",
    "t-online.de",
    "tutanota.com",
    "verizon.net",
    "web.de",
    "wp.pl",
    "yahoo.co.in",
    "yahoo.co.jp",
    "yahoo.co.uk",
    "yahoo.com",
    "yahoo.de",
    "yahoo.fr",
    "yandex.com",
    "yandex.ru",
    "yeah.net",
    "ymail.com",
    "zoho.com",
];

pub fn is_free_mail_domain(domain: &str) -> bool {
    FREE_MAIL_DOMAINS.binary_search(&domain).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn free_mail_list_is_sorted_for_binary_search() {
        let mut sorted = FREE_MAIL_DOMAINS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, FREE_MAIL_DOMAINS);
        assert!(is_free_mail_domain("gmail.com"));
        assert!(!is_free_mail_domain("acme.io"));
    }

    #[test]
    fn operators() {
        let v = json!("Pro");
        assert!(Op::Equals(json!("Pro")).test(Some(&v)));
        assert!(!Op::Equals(json!("pro")).test(Some(&v)));
        assert!(Op::Equals(json!(1.0)).test(Some(&json!(1))));
        assert!(Op::In(vec![json!("Free"), json!("Pro")]).test(Some(&v)));
        assert!(Op::NotIn(vec![json!("Free")]).test(Some(&v)));
        assert!(Op::AtLeast(50.0).test(Some(&json!("250"))));
        assert!(!Op::AtLeast(50.0).test(Some(&json!("many"))));
        assert!(Op::LessThan(3.0).test(Some(&json!(2))));
        assert!(Op::Contains("/pricing".into()).test(Some(&json!("https://x.io/pricing?a=1"))));
        assert!(Op::Contains("admin".into()).test(Some(&json!(["user", "admin"]))));
        assert!(Op::FreeMail(true).test(Some(&json!("Bob@GMail.com"))));
        assert!(Op::FreeMail(false).test(Some(&json!("ann@acme.io"))));
        assert!(Op::EmailDomainIn(vec!["rival.com".into()]).test(Some(&json!("x@eu.rival.com"))));
        assert!(!Op::EmailDomainIn(vec!["rival.com".into()]).test(Some(&json!("x@notrival.com"))));
        assert!(Op::EmailDomainIn(vec!["rival.com".into()]).test(Some(&json!("x@Rival.com"))));
    }

    #[test]
    fn missing_values_only_satisfy_exists_false() {
        assert!(Op::Exists(false).test(None));
        assert!(Op::Exists(false).test(Some(&Value::Null)));
        assert!(!Op::NotEquals(json!("paid")).test(None));
        assert!(!Op::NotIn(vec![json!("paid")]).test(None));
        assert!(Op::Exists(true).test(Some(&json!(0))));
    }

    #[test]
    fn dotted_paths_walk_nested_objects() {
        let props = json!({"plan": {"tier": "team"}, "path": "/pricing"});
        let map = props.as_object().unwrap();
        assert_eq!(
            lookup(map, &["plan".into(), "tier".into()]),
            Some(&json!("team"))
        );
        assert_eq!(lookup(map, &["path".into(), "x".into()]), None);
    }
}
