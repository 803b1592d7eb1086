//! `StateMap`: which definition changes can be answered from a state built for another
//! version, and that the mapped state decides exactly as a state built for the new version.

use serde_json::json;

use pql_engine::event::parse_call;
use pql_engine::state::StateMap;
use pql_engine::time::MS_PER_DAY;
use pql_engine::{verdict, AccountState, Definition, Event, Timestamp};

const T0: i64 = 1_767_225_600_000;

fn day(d: f64) -> Timestamp {
    Timestamp(T0 + (d * MS_PER_DAY as f64).round() as i64)
}

fn definition(source: &str) -> Definition {
    Definition::from_toml("test.toml", source).unwrap_or_else(|e| panic!("{e}"))
}

const BASE: &str = r#"
name = "base"
[[milestone]]
name = "projects"
event = "Project Created"
count_at_least = 2
points = 30
[[milestone]]
name = "invited"
event = "Teammate Invited"
count_at_least = 1
points = 20
[[scoring.event]]
event = "Report Viewed"
points = 5
cap = 20
[fit]
min_score = 0
[[fit.condition]]
name = "big"
points = 10
when = { account_trait = "employees", at_least = 50 }
[tiers]
warm = 30
hot = 60
[pql]
min_tier = "hot"
"#;

fn events() -> Vec<Event> {
    let calls = [
        json!({"type": "group", "userId": "u1", "groupId": "acme", "traits": {"employees": 80}}),
        json!({"type": "track", "userId": "u1", "event": "Project Created", "context": {"groupId": "acme"}}),
        json!({"type": "track", "userId": "u2", "event": "Project Created", "context": {"groupId": "acme"}}),
        json!({"type": "track", "userId": "u2", "event": "Teammate Invited", "context": {"groupId": "acme"}}),
        json!({"type": "track", "userId": "u2", "event": "Report Viewed", "context": {"groupId": "acme"}}),
        json!({"type": "track", "userId": "u2", "event": "Dashboard Shared", "context": {"groupId": "acme"}}),
    ];
    calls
        .into_iter()
        .enumerate()
        .map(|(i, mut call)| {
            let o = call.as_object_mut().unwrap();
            o.insert("messageId".into(), json!(format!("m{i}")));
            o.insert("timestamp".into(), json!(day(i as f64 * 0.5).to_rfc3339()));
            parse_call(call.to_string().as_bytes(), None, None).unwrap()
        })
        .collect()
}

fn build(d: &Definition) -> AccountState {
    let mut state = AccountState::new(d);
    for e in events() {
        state.apply(d, &e);
    }
    state
}

#[test]
fn points_tiers_and_order_map_and_decide_like_a_rebuild() {
    let base = definition(BASE);
    // Milestones swapped and renamed, points and tiers changed: nothing new is tracked.
    let changed = definition(
        &BASE
            .replace("name = \"projects\"", "name = \"projects_made\"")
            .replace("points = 30", "points = 50")
            .replace("hot = 60", "hot = 70"),
    );
    let map = StateMap::between(&base, &changed).expect("same tracking");
    let mapped = map.map(&changed, &build(&base)).unwrap();
    let rebuilt = build(&changed);
    assert_eq!(mapped, rebuilt);
    let now = day(3.0);
    assert_eq!(
        verdict(&changed, &mapped, now),
        verdict(&changed, &rebuilt, now)
    );
    // Milestone and event points (fit scores apart): 50 + 20 + 5 under the change, 30 + 20 + 5 before.
    assert_eq!(verdict(&changed, &mapped, now).score, 75.0);
    assert_eq!(verdict(&base, &build(&base), now).score, 55.0);
    // A state of another version is not mapped.
    assert!(map.map(&changed, &rebuilt).is_none());
}

#[test]
fn reordered_milestones_map_by_content() {
    let base = definition(BASE);
    let reordered = definition(
        r#"
name = "reordered"
[[milestone]]
name = "invited"
event = "Teammate Invited"
count_at_least = 1
points = 20
[[milestone]]
name = "projects"
event = "Project Created"
count_at_least = 2
points = 30
[[scoring.event]]
event = "Report Viewed"
points = 5
cap = 20
[fit]
min_score = 0
[[fit.condition]]
name = "big"
points = 10
when = { account_trait = "employees", at_least = 50 }
[tiers]
warm = 30
hot = 60
[pql]
min_tier = "hot"
"#,
    );
    let mapped = StateMap::between(&base, &reordered)
        .unwrap()
        .map(&reordered, &build(&base))
        .unwrap();
    assert_eq!(mapped, build(&reordered));
}

#[test]
fn new_milestones_rules_and_traits_are_gaps() {
    let base = definition(BASE);
    let needs_more = definition(
        &BASE
            .replace("count_at_least = 2", "count_at_least = 3")
            .replace("event = \"Report Viewed\"", "event = \"Dashboard Shared\"")
            .replace("account_trait = \"employees\"", "account_trait = \"seats\""),
    );
    let gaps = StateMap::between(&base, &needs_more).unwrap_err();
    assert_eq!(gaps.len(), 3, "{gaps:?}");
    assert!(gaps[0].starts_with("milestone `projects`"), "{gaps:?}");
    assert!(gaps[1].starts_with("scoring.event[0]"), "{gaps:?}");
    assert!(gaps[2].contains("account trait `seats`"), "{gaps:?}");
    // The other way round is a gap too: the smaller threshold keeps fewer hits.
    assert!(StateMap::between(&needs_more, &base).is_err());
    // Dropping something is fine: a subset is tracked.
    let fewer = definition(&BASE.replace(
        "[[fit.condition]]\nname = \"big\"\npoints = 10\nwhen = { account_trait = \"employees\", at_least = 50 }\n",
        "",
    ));
    let mapped = StateMap::between(&base, &fewer)
        .unwrap()
        .map(&fewer, &build(&base))
        .unwrap();
    assert_eq!(mapped, build(&fewer));
}
