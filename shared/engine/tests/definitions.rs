//! Definition validation as a user sees it: every problem with file, line, field, what is
//! wrong and what is allowed; and version ids that follow meaning, not layout.

use pql_engine::definition::MAX_MILESTONES;
use pql_engine::Definition;

/// A small valid definition; the tests below break one thing at a time. Line numbers matter:
/// they are asserted on.
const BASE: &str = r#"name = "trial"

[[milestone]]
name = "projects"
event = "Project Created"
count_at_least = 2

[[milestone]]
name = "pricing"
page = "Pricing"
count_at_least = 1
in_last_days = 7

[[scoring.event]]
event = "Report Shared"
points = 3
cap = 9

[[gate]]
name = "bought"
milestone = "pricing"

[tiers]
warm = 10
hot = 20

[pql]
min_tier = "warm"
milestones = ["projects", "pricing"]
require = "all"
"#;

const FILE: &str = "defs/trial.toml";

/// `BASE` with `from` replaced by `to` (which must occur exactly once).
fn edit(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "`{from}` must occur once in BASE"
    );
    BASE.replace(from, to)
}

/// The error report for a TOML source, exactly as printed.
fn errors(source: &str) -> String {
    match Definition::from_toml(FILE, source) {
        Ok(d) => panic!("expected errors, got a valid definition {}", d.version),
        Err(e) => e.to_string(),
    }
}

fn version(source: &str) -> String {
    Definition::from_toml(FILE, source)
        .unwrap_or_else(|e| panic!("{e}"))
        .version
}

#[test]
fn the_base_definition_is_valid() {
    let d = Definition::from_toml(FILE, BASE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.milestones.len(), 2);
    assert!(
        d.version.starts_with('v') && d.version.len() == 13,
        "{}",
        d.version
    );
}

// ---- unknown fields ---------------------------------------------------------------------------

#[test]
fn a_typo_in_a_milestone_is_an_unknown_field_with_its_line() {
    assert_eq!(
        errors(&edit("count_at_least = 2", "count_at_leest = 2")),
        "defs/trial.toml:6:1: count_at_leest: unknown field `count_at_leest` (allowed: one of \
         `name`, `description`, `event`, `page`, `screen`, `any`, `where`, `count_at_least`, \
         `sum_of`, `sum_at_least`, `distinct_users_at_least`, `distinct_days_at_least`, \
         `within_days_of_signup`, `in_last_days`, `points`)"
    );
}

#[test]
fn typos_elsewhere_are_caught_too() {
    assert_eq!(
        errors(&edit("points = 3", "pionts = 3")),
        "defs/trial.toml:16:1: pionts: unknown field `pionts` (allowed: one of `event`, `page`, \
         `screen`, `any`, `where`, `points`, `cap`)"
    );
    let report = errors(&edit("[pql]", "[pqll]"));
    assert!(
        report.starts_with("defs/trial.toml:27:2: unknown field `pqll` (allowed: one of `name`,"),
        "{report}"
    );
    let report = errors(&edit(
        "in_last_days = 7",
        "in_last_days = 7\nwhere = [{ propety = \"path\", contains = \"/pricing\" }]",
    ));
    assert!(
        report.starts_with("defs/trial.toml:13:12: where: unknown field `propety` (allowed: one of `property`, `trait`,"),
        "{report}"
    );
}

// ---- milestone names --------------------------------------------------------------------------

#[test]
fn duplicate_milestone_names() {
    let source = edit("name = \"pricing\"", "name = \"projects\"");
    let report = errors(&source);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[0],
        "defs/trial.toml:9:1: milestone[1].name: milestone `projects` is defined twice (first as \
         milestone[0]) (allowed: unique milestone names)"
    );
    // The references to the renamed milestone are reported as well, each on its own line.
    assert_eq!(
        lines[1],
        "defs/trial.toml:21:1: gate[0].milestone: milestone `pricing` is not defined (allowed: \
         one of `projects`, `projects`)"
    );
    assert_eq!(lines.len(), 3, "{report}");
}

#[test]
fn undefined_milestones_in_the_pql_rule_activation_and_gates() {
    assert_eq!(
        errors(&edit(
            "milestones = [\"projects\", \"pricing\"]",
            "milestones = [\"projects\", \"pricnig\"]"
        )),
        "defs/trial.toml:29:27: pql.milestones[1]: milestone `pricnig` is not defined (allowed: \
         one of `projects`, `pricing`)"
    );
    assert_eq!(
        errors(&edit(
            "[pql]",
            "[activation]\nmilestones = [\"nope\"]\n\n[pql]"
        )),
        "defs/trial.toml:28:15: activation.milestones[0]: milestone `nope` is not defined \
         (allowed: one of `projects`, `pricing`)"
    );
    assert_eq!(
        errors(&edit(
            "milestone = \"pricing\"",
            "milestone = \"purchased\""
        )),
        "defs/trial.toml:21:1: gate[0].milestone: milestone `purchased` is not defined (allowed: \
         one of `projects`, `pricing`)"
    );
    assert_eq!(
        errors(&edit(
            "milestones = [\"projects\", \"pricing\"]",
            "milestones = [\"projects\", \"projects\"]"
        )),
        "defs/trial.toml:29:27: pql.milestones[1]: milestone `projects` is listed twice \
         (allowed: each milestone once)"
    );
}

// ---- windows ----------------------------------------------------------------------------------

#[test]
fn impossible_windows() {
    for (days, shown) in [("-1", "-1"), ("0", "0"), ("3651", "3651"), ("nan", "NaN")] {
        assert_eq!(
            errors(&edit("in_last_days = 7", &format!("in_last_days = {days}"))),
            format!(
                "defs/trial.toml:12:1: milestone[1].in_last_days: a window of {shown} days is \
                 impossible (allowed: more than 0 and at most 3650 days)"
            )
        );
    }
    assert_eq!(
        errors(&edit("in_last_days = 7", "within_days_of_signup = 0")),
        "defs/trial.toml:12:1: milestone[1].within_days_of_signup: a window of 0 days is \
         impossible (allowed: more than 0 and at most 3650 days)"
    );
    assert_eq!(
        errors(&edit(
            "in_last_days = 7",
            "in_last_days = 7\nwithin_days_of_signup = 7"
        )),
        "defs/trial.toml:12:1: milestone[1].in_last_days: a milestone has one window (allowed: \
         either `within_days_of_signup` or `in_last_days`, not both)"
    );
    assert_eq!(
        errors(&edit(
            "[[scoring.event]]",
            "[scoring]\nhalf_life_days = -3\n\n[[scoring.event]]"
        )),
        "defs/trial.toml:15:1: scoring.half_life_days: a window of -3 days is impossible \
         (allowed: more than 0 and at most 3650 days)"
    );
    // The longest window is fine.
    version(&edit("in_last_days = 7", "in_last_days = 3650"));
}

#[test]
fn more_distinct_days_than_the_window_has() {
    let source = edit(
        "count_at_least = 1\nin_last_days = 7",
        "distinct_days_at_least = 9\nin_last_days = 7",
    );
    assert_eq!(
        errors(&source),
        "defs/trial.toml:11:1: milestone[1].distinct_days_at_least: 9 distinct days can never \
         fit in a 7-day window (allowed: at most 8 days, or a longer window)"
    );
    // A 7-day window touches up to 8 calendar days: 8 is possible.
    version(&edit(
        "count_at_least = 1\nin_last_days = 7",
        "distinct_days_at_least = 8\nin_last_days = 7",
    ));
}

// ---- thresholds and selectors -----------------------------------------------------------------

#[test]
fn a_milestone_needs_exactly_one_threshold() {
    let expected = "defs/trial.toml:3:1: milestone[0]: a milestone needs one threshold \
         (allowed: exactly one of `count_at_least`, `sum_of` with `sum_at_least`, \
         `distinct_users_at_least`, `distinct_days_at_least`)";
    assert_eq!(
        errors(&edit(
            "count_at_least = 2",
            "count_at_least = 2\ndistinct_users_at_least = 2"
        )),
        expected
    );
    assert_eq!(errors(&edit("count_at_least = 2\n", "")), expected);
    assert_eq!(
        errors(&edit("count_at_least = 2", "count_at_least = 0")),
        "defs/trial.toml:6:1: milestone[0].count_at_least: 0 is out of range (allowed: a whole \
         number from 1 to 10000)"
    );
    assert_eq!(
        errors(&edit("count_at_least = 2", "sum_of = \"calls\"")),
        "defs/trial.toml:6:1: milestone[0].sum_of: `sum_of` without `sum_at_least` (allowed: \
         `sum_of = \"property\"` together with `sum_at_least = X`)"
    );
}

#[test]
fn a_milestone_needs_a_selector() {
    assert_eq!(
        errors(&edit("event = \"Project Created\"\n", "")),
        "defs/trial.toml:3:1: milestone[0]: it must say which calls it matches (allowed: exactly \
         one of `event`, `page`, `screen` (a name, or \"*\" for any) or `any = true`)"
    );
    assert_eq!(
        errors(&edit(
            "event = \"Project Created\"",
            "event = \"Project Created\"\npage = \"*\""
        )),
        "defs/trial.toml:3:1: milestone[0]: it must say which calls it matches (allowed: exactly \
         one of `event`, `page`, `screen` (a name, or \"*\" for any) or `any = true`)"
    );
}

// ---- tiers, rules, caps -----------------------------------------------------------------------

#[test]
fn warm_must_be_below_hot() {
    for hot in ["10", "5"] {
        assert_eq!(
            errors(&edit("hot = 20", &format!("hot = {hot}"))),
            format!(
                "defs/trial.toml:25:1: tiers.hot: hot ({hot}) must be above warm (10) (allowed: \
                 warm < hot)"
            )
        );
    }
}

#[test]
fn require_must_be_possible() {
    assert_eq!(
        errors(&edit("require = \"all\"", "require = 3")),
        "defs/trial.toml:30:1: pql.require: at least 3 of 2 milestones can never hold (allowed: \
         a number from 1 to 2)"
    );
    assert_eq!(
        errors(&edit("require = \"all\"", "require = 0")),
        "defs/trial.toml:30:1: pql.require: `require = 0` would hold without any milestone met \
         (allowed: a number from 1 to 2)"
    );
    assert_eq!(
        errors(&edit("require = \"all\"", "require = \"most\"")),
        "defs/trial.toml:30:1: pql.require: `most` is not a requirement (allowed: \"all\", \
         \"any\", or a number k (at least k of the milestones))"
    );
    version(&edit("require = \"all\"", "require = 2"));
    version(&edit("require = \"all\"", "require = \"any\""));
}

#[test]
fn the_pql_tier_must_be_warm_or_hot() {
    assert_eq!(
        errors(&edit("min_tier = \"warm\"", "min_tier = \"cold\"")),
        "defs/trial.toml:28:1: pql.min_tier: `cold` is not a tier that can qualify (allowed: \
         \"warm\" or \"hot\")"
    );
}

#[test]
fn caps_must_have_the_sign_of_the_points() {
    let expected = |cap: &str| {
        format!(
            "defs/trial.toml:17:1: scoring.event[0].cap: points = 3 with cap = {cap} cannot work \
             (allowed: non-zero points, and a cap of the same sign at least as large as the \
             points)"
        )
    };
    assert_eq!(errors(&edit("cap = 9", "cap = -9")), expected("-9"));
    assert_eq!(errors(&edit("cap = 9", "cap = 2")), expected("2"));
    // Negative points take a negative cap.
    version(&edit("points = 3\ncap = 9", "points = -3\ncap = -9"));
    assert_eq!(
        errors(&edit("points = 3\ncap = 9", "points = -3\ncap = 9")),
        "defs/trial.toml:17:1: scoring.event[0].cap: points = -3 with cap = 9 cannot work \
         (allowed: non-zero points, and a cap of the same sign at least as large as the points)"
    );
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let source = edit("cap = 9", "cap = -9").replace("hot = 20", "hot = 10");
    assert_eq!(
        errors(&source),
        "defs/trial.toml:17:1: scoring.event[0].cap: points = 3 with cap = -9 cannot work \
         (allowed: non-zero points, and a cap of the same sign at least as large as the points)\n\
         defs/trial.toml:25:1: tiers.hot: hot (10) must be above warm (10) (allowed: warm < hot)"
    );
}

#[test]
fn too_many_milestones() {
    let mut source = BASE.to_string();
    for i in 0..MAX_MILESTONES - 1 {
        source.push_str(&format!(
            "\n[[milestone]]\nname = \"m{i}\"\nevent = \"E{i}\"\ncount_at_least = 1\n"
        ));
    }
    // 2 + 127 = 129 milestones; the 129th starts at this line:
    let line = BASE.lines().count() + 1 + 5 * (MAX_MILESTONES - 2) + 1;
    assert_eq!(
        errors(&source),
        format!(
            "defs/trial.toml:{line}:1: milestone[128]: the definition has 129 milestones \
             (allowed: at most 128 milestones)"
        )
    );
    // 128 is fine.
    let cut = source.rfind("\n[[milestone]]").unwrap();
    version(&source[..cut]);
}

// ---- JSON -------------------------------------------------------------------------------------

/// The same definition as `BASE`, as the admin API receives it.
const BASE_JSON: &str = r#"{
  "name": "trial",
  "milestone": [
    {"name": "projects", "event": "Project Created", "count_at_least": 2},
    {"name": "pricing", "page": "Pricing", "count_at_least": 1, "in_last_days": 7}
  ],
  "scoring": {"event": [{"event": "Report Shared", "points": 3, "cap": 9}]},
  "gate": [{"name": "bought", "milestone": "pricing"}],
  "tiers": {"warm": 10, "hot": 20},
  "pql": {"min_tier": "warm", "milestones": ["projects", "pricing"], "require": "all"}
}"#;

#[test]
fn json_and_toml_of_the_same_definition_share_a_version() {
    let json =
        Definition::from_json("defs/trial.json", BASE_JSON).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json.version, version(BASE));
    // Integers and floats, key order: none of it matters.
    let reordered = BASE_JSON
        .replace("\"warm\": 10, \"hot\": 20", "\"hot\": 20.0, \"warm\": 10.0")
        .replace("\"points\": 3, \"cap\": 9", "\"cap\": 9.0, \"points\": 3");
    assert_eq!(
        Definition::load("defs/trial.json", &reordered)
            .unwrap()
            .version,
        json.version
    );

    // The example definition, converted mechanically.
    let toml_source = include_str!("../../../examples/definition.toml");
    let value: serde_json::Value = toml::from_str(toml_source).unwrap();
    let from_toml = Definition::from_toml("examples/definition.toml", toml_source).unwrap();
    let from_json = Definition::from_json("definition.json", &value.to_string()).unwrap();
    assert_eq!(from_json.version, from_toml.version);
}

#[test]
fn json_errors_name_the_file_and_field() {
    assert_eq!(
        Definition::from_json(
            "defs/trial.json",
            &BASE_JSON.replace("\"hot\": 20", "\"hot\": 5")
        )
        .unwrap_err()
        .to_string(),
        "defs/trial.json: tiers.hot: hot (5) must be above warm (10) (allowed: warm < hot)"
    );
    let typo = BASE_JSON.replace("\"count_at_least\": 2", "\"count_at_leest\": 2");
    let report = Definition::load("defs/trial.json", &typo)
        .unwrap_err()
        .to_string();
    assert!(
        report.starts_with(
            "defs/trial.json:4:69: unknown field `count_at_leest` (allowed: one of `name`,"
        ),
        "{report}"
    );
    assert_eq!(
        Definition::from_json(
            "defs/trial.json",
            "{\"name\": \"t\",\n \"tiers\": {\"warm\": 1 \"hot\": 2}}"
        )
        .unwrap_err()
        .to_string(),
        "defs/trial.json:2:22: expected `,` or `}`"
    );
}

// ---- versions ---------------------------------------------------------------------------------

#[test]
fn layout_and_comments_keep_the_version() {
    let v = version(BASE);
    let commented = BASE
        .replace("[tiers]", "# Tiers: tuned in March.\n[tiers]")
        .replace("warm = 10", "warm   =   10   # warm at ten");
    assert_eq!(version(&commented), v);
    let spaced = BASE.replace('\n', "\n\n");
    assert_eq!(version(&spaced), v);
    // Keys in another order within a table, and an inline table for the same thing.
    let reordered = edit("warm = 10\nhot = 20", "hot = 20\nwarm = 10");
    assert_eq!(version(&reordered), v);
    let inline = edit("[tiers]\nwarm = 10\nhot = 20\n\n", "").replace(
        "name = \"trial\"\n",
        "name = \"trial\"\ntiers = { warm = 10, hot = 20 }\n",
    );
    assert_eq!(version(&inline), v);
    // 10 and 10.0 are the same number.
    assert_eq!(version(&edit("warm = 10", "warm = 10.0")), v);
}

#[test]
fn meaning_changes_change_the_version() {
    let v = version(BASE);
    let changed = [
        edit("count_at_least = 2", "count_at_least = 3"),
        edit("in_last_days = 7", "in_last_days = 8"),
        edit("cap = 9", "cap = 12"),
        edit("hot = 20", "hot = 25"),
        edit("require = \"all\"", "require = \"any\""),
        edit("name = \"trial\"", "name = \"trial v2\""),
    ];
    let mut versions: Vec<String> = changed.iter().map(|s| version(s)).collect();
    assert!(versions.iter().all(|x| *x != v), "{versions:?}");
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), changed.len());
}

/// `apply` finds the milestones and scoring rules a call concerns through the definition's
/// dispatch index: it must be exactly the ones whose selector matches the call, for every
/// kind of selector (named, `*`, `any`) and call (named, unnamed, other names, other types).
#[test]
fn the_dispatch_index_finds_exactly_the_matching_selectors() {
    let source = r#"
name = "selectors"

[[milestone]]
name = "projects"
event = "Project Created"
count_at_least = 1

[[milestone]]
name = "any_track"
event = "*"
count_at_least = 5

[[milestone]]
name = "pricing"
page = "Pricing"
count_at_least = 2

[[milestone]]
name = "any_page"
page = "*"
count_at_least = 9

[[milestone]]
name = "settings_screen"
screen = "Settings"
count_at_least = 1

[[milestone]]
name = "anything"
any = true
distinct_days_at_least = 3

[[milestone]]
name = "projects_again"
event = "Project Created"
distinct_users_at_least = 2

[[scoring.event]]
event = "Project Created"
points = 2
cap = 10

[[scoring.event]]
page = "Pricing"
points = 1
cap = 3

[[scoring.event]]
screen = "*"
points = 1
cap = 2

[tiers]
warm = 10
hot = 20

[pql]
min_tier = "hot"
"#;
    let d = Definition::from_toml("selectors.toml", source).unwrap_or_else(|e| panic!("{e}"));
    let calls = [
        r#""type":"track","event":"Project Created""#,
        r#""type":"track","event":"Report Shared""#,
        r#""type":"track","event":"Pricing""#,
        r#""type":"page","name":"Pricing""#,
        r#""type":"page","name":"Docs""#,
        r#""type":"page""#,
        r#""type":"screen","name":"Settings""#,
        r#""type":"screen","name":"Project Created""#,
        r#""type":"screen""#,
        r#""type":"identify""#,
        r#""type":"group","groupId":"acct""#,
        r#""type":"alias","previousId":"old""#,
    ];
    for (i, call) in calls.iter().enumerate() {
        let json = format!(
            r#"{{"messageId":"m-{i}","userId":"ann","timestamp":"2026-01-01T00:00:00Z",{call}}}"#
        );
        let event = pql_engine::event::parse_call(json.as_bytes(), None, None).unwrap();
        let targets = d.dispatch.targets(&event);
        let milestones: Vec<usize> = (0..d.milestones.len())
            .filter(|&m| d.milestones[m].selector.matches(&event))
            .collect();
        let scoring: Vec<usize> = (0..d.scoring.events.len())
            .filter(|&r| d.scoring.events[r].selector.matches(&event))
            .collect();
        assert_eq!(targets.milestones, milestones, "milestones for {call}");
        assert_eq!(targets.scoring, scoring, "scoring rules for {call}");
    }
}
