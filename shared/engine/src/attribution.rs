//! Attribution: which identities, users and accounts one event concerns. Pure.
//!
//! [`attribute`] says *what* an event does to the graph of users and accounts, not how that
//! graph is stored: the in-memory [`Ledger`](crate::Ledger) and the activation function (which
//! keeps users and accounts as versioned records in DynamoDB) carry out the same plan, in the
//! same order, so the live pipeline and `pql backtest` agree:
//!
//! 1. [`Attribution::join`]: two identities of one person to join (an `alias` call,
//!    previousId → userId, or an `identify` carrying both userId and anonymousId). Each side's
//!    activity then counts for the other's accounts too; joins are transitive.
//! 2. [`Attribution::link`]: a `group` call links its user (and every identity joined to it)
//!    to the account; the activity they sent before that named no account is merged into it.
//! 3. [`Attribution::target`]: where the event itself counts: the account it names (the
//!    `group` call's groupId or `context.groupId`) and only there, or, when it names none, the
//!    user's own activity and every account of the user and of its joined identities.

use crate::event::{Event, EventKind};

/// What one event does to users and accounts, in the order the steps are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribution<'e> {
    /// Two distinct identities of the same person to join (step 1).
    pub join: Option<Join<'e>>,
    /// A user to link to an account (step 2).
    pub link: Option<Link<'e>>,
    /// Where the event itself counts (step 3).
    pub target: Target<'e>,
}

/// Two identities of one person: each becomes an alias of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Join<'e> {
    /// The known user id (`userId`).
    pub user: &'e str,
    /// The other identity: `anonymousId` of an identify call, `previousId` of an alias call.
    pub other: &'e str,
}

/// A user that joins an account (a `group` call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link<'e> {
    pub user: &'e str,
    pub account: &'e str,
}

/// Where an event counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'e> {
    /// The account the event names, and only that account.
    Account(&'e str),
    /// The event names no account: it counts for the user's own (unattributed) activity, which
    /// is merged into accounts the user joins later, and for every account of the user and of
    /// the identities joined to it, now.
    User(&'e str),
}

/// The attribution plan of one event.
pub fn attribute(event: &Event) -> Attribution<'_> {
    let join = match (&event.kind, &event.user_id, &event.anonymous_id) {
        (EventKind::Identify, Some(user), Some(anonymous)) => Some(Join {
            user,
            other: anonymous,
        }),
        (EventKind::Alias { previous_id }, Some(user), _) => Some(Join {
            user,
            other: previous_id,
        }),
        _ => None,
    }
    .filter(|j| j.user != j.other);
    let link = match &event.kind {
        EventKind::Group { group_id } => Some(Link {
            user: event.user_key(),
            account: group_id,
        }),
        _ => None,
    };
    let target = match event.account_id() {
        Some(account) => Target::Account(account),
        None => Target::User(event.user_key()),
    };
    Attribution { join, link, target }
}

/// Adds `item` to `list` unless it is there already; returns whether it was added.
pub fn push_unique<T: AsRef<str> + for<'a> From<&'a str>>(list: &mut Vec<T>, item: &str) -> bool {
    if list.iter().any(|x| x.as_ref() == item) {
        false
    } else {
        list.push(T::from(item));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_call;

    fn event(json: &str) -> Event {
        parse_call(json.as_bytes(), None, None).unwrap()
    }

    const T: &str = r#""timestamp":"2026-01-05T10:00:00Z","messageId":"m1""#;

    #[test]
    fn a_track_call_without_an_account_counts_for_its_user() {
        let e = event(&format!(
            r#"{{"type":"track","event":"X","userId":"u1",{T}}}"#
        ));
        assert_eq!(
            attribute(&e),
            Attribution {
                join: None,
                link: None,
                target: Target::User("u1")
            }
        );
    }

    #[test]
    fn an_anonymous_call_counts_for_the_anonymous_identity() {
        let e = event(&format!(r#"{{"type":"page","anonymousId":"a1",{T}}}"#));
        assert_eq!(attribute(&e).target, Target::User("a1"));
        // userId wins when both are present.
        let e = event(&format!(
            r#"{{"type":"page","userId":"u1","anonymousId":"a1",{T}}}"#
        ));
        assert_eq!(attribute(&e).target, Target::User("u1"));
        assert_eq!(attribute(&e).join, None, "only identify and alias join");
    }

    #[test]
    fn context_group_id_names_the_only_account() {
        let e = event(&format!(
            r#"{{"type":"track","event":"X","userId":"u1","context":{{"groupId":"acc-1"}},{T}}}"#
        ));
        let plan = attribute(&e);
        assert_eq!(plan.target, Target::Account("acc-1"));
        assert_eq!(plan.link, None, "naming an account does not link the user");
    }

    #[test]
    fn a_group_call_links_its_user_and_counts_for_its_account() {
        let e = event(&format!(
            r#"{{"type":"group","groupId":"acc-1","userId":"u1","traits":{{"plan":"pro"}},{T}}}"#
        ));
        assert_eq!(
            attribute(&e),
            Attribution {
                join: None,
                link: Some(Link {
                    user: "u1",
                    account: "acc-1"
                }),
                target: Target::Account("acc-1"),
            }
        );
        // groupId wins over context.groupId.
        let e = event(&format!(
            r#"{{"type":"group","groupId":"acc-1","anonymousId":"a1","context":{{"groupId":"acc-2"}},{T}}}"#
        ));
        let plan = attribute(&e);
        assert_eq!(
            plan.link,
            Some(Link {
                user: "a1",
                account: "acc-1"
            })
        );
        assert_eq!(plan.target, Target::Account("acc-1"));
    }

    #[test]
    fn identify_with_both_ids_joins_them() {
        let e = event(&format!(
            r#"{{"type":"identify","userId":"u1","anonymousId":"a1",{T}}}"#
        ));
        assert_eq!(
            attribute(&e),
            Attribution {
                join: Some(Join {
                    user: "u1",
                    other: "a1"
                }),
                link: None,
                target: Target::User("u1"),
            }
        );
        let e = event(&format!(r#"{{"type":"identify","userId":"u1",{T}}}"#));
        assert_eq!(attribute(&e).join, None);
        // The same id twice is no join.
        let e = event(&format!(
            r#"{{"type":"identify","userId":"u1","anonymousId":"u1",{T}}}"#
        ));
        assert_eq!(attribute(&e).join, None);
    }

    #[test]
    fn alias_joins_the_previous_id_to_the_user() {
        let e = event(&format!(
            r#"{{"type":"alias","userId":"u1","previousId":"old",{T}}}"#
        ));
        assert_eq!(
            attribute(&e),
            Attribution {
                join: Some(Join {
                    user: "u1",
                    other: "old"
                }),
                link: None,
                target: Target::User("u1"),
            }
        );
        // Without a userId there is nobody to join to.
        let e = event(&format!(
            r#"{{"type":"alias","anonymousId":"a1","previousId":"old",{T}}}"#
        ));
        assert_eq!(attribute(&e).join, None);
        assert_eq!(attribute(&e).target, Target::User("a1"));
    }

    #[test]
    fn an_identify_that_names_an_account_joins_and_counts_there() {
        let e = event(&format!(
            r#"{{"type":"identify","userId":"u1","anonymousId":"a1","context":{{"groupId":"acc-9"}},{T}}}"#
        ));
        let plan = attribute(&e);
        assert!(plan.join.is_some());
        assert_eq!(plan.target, Target::Account("acc-9"));
    }

    #[test]
    fn push_unique_adds_once() {
        let mut list: Vec<String> = Vec::new();
        assert!(push_unique(&mut list, "a"));
        assert!(!push_unique(&mut list, "a"));
        assert!(push_unique(&mut list, "b"));
        assert_eq!(list, ["a", "b"]);
    }
}
