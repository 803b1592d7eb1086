//! Throughput of the hot path, on ~100k parsed events for ~1,000 accounts with the example
//! definition:
//!
//! * `apply+verdict`: `AccountState::apply` then `verdict` for every event, as the ledger and
//!   the stream processor do;
//! * `apply` and `verdict` alone, to see where the time goes;
//! * `ledger ingest`: the whole in-memory ledger (attribution, merges, lifecycle).
//!
//! Run: `cargo bench -p pql-engine --bench apply_evaluate -- --warm-up-time 1 --measurement-time 5`
//!
//! Before the benchmarks, the state size per account is printed (serialized and in memory).

use std::hint::black_box;
use std::mem::size_of;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use pql_engine::event::parse_call;
use pql_engine::hits::{Hit, HitSet};
use pql_engine::state::TraitValue;
use pql_engine::time::MS_PER_DAY;
use pql_engine::{verdict, AccountState, Definition, Event, Ledger, Timestamp};

const ACCOUNTS: usize = 1_000;
const USERS_PER_ACCOUNT: usize = 4;
const EVENTS: usize = 100_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

/// Knuth's MMIX LCG; the high bits are good enough to pick events.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn definition() -> Definition {
    let source = include_str!("../../../examples/definition.toml");
    Definition::from_toml("examples/definition.toml", source).expect("the example is valid")
}

/// The events, in time order, each with the index of the account it belongs to.
fn events() -> Vec<(usize, Event)> {
    let mut rng = Lcg(0x5EED);
    let mut raw: Vec<(i64, usize, String)> = Vec::with_capacity(EVENTS);
    let mut id = 0usize;
    let mut push = |raw: &mut Vec<(i64, usize, String)>, at: i64, account: usize, body: String| {
        id += 1;
        let json = format!(
            r#"{{"messageId":"m-{id}","timestamp":"{}",{body}}}"#,
            Timestamp(at).to_rfc3339()
        );
        raw.push((at, account, json));
    };
    let industries = ["Software", "Fintech", "Retail", "Healthcare"];
    let domains = ["gmail.com", "acme.io", "initech.com", "yahoo.com"];
    let created: Vec<i64> = (0..ACCOUNTS)
        .map(|_| T0 + rng.below(30 * MS_PER_DAY as u64) as i64)
        .collect();
    for (a, &start) in created.iter().enumerate() {
        let employees = rng.below(500);
        let industry = industries[rng.below(4) as usize];
        for k in 0..USERS_PER_ACCOUNT {
            let at = start + k as i64 * 3_600_000;
            push(
                &mut raw,
                at,
                a,
                format!(
                    r#""type":"group","userId":"u-{a}-{k}","groupId":"acct-{a}","traits":{{"name":"Account {a}","created_at":"{}","employees":"{employees}","industry":"{industry}","plan":"free"}}"#,
                    Timestamp(start).to_rfc3339()
                ),
            );
            push(
                &mut raw,
                at + 1_000,
                a,
                format!(
                    r#""type":"identify","userId":"u-{a}-{k}","traits":{{"email":"user{k}@{}"}}"#,
                    domains[rng.below(4) as usize]
                ),
            );
        }
    }
    while raw.len() < EVENTS {
        let a = rng.below(ACCOUNTS as u64) as usize;
        let k = rng.below(USERS_PER_ACCOUNT as u64);
        let at = created[a] + 4 * 3_600_000 + rng.below(60 * MS_PER_DAY as u64) as i64;
        let context = if rng.below(10) < 8 {
            format!(r#","context":{{"groupId":"acct-{a}"}}"#)
        } else {
            String::new()
        };
        let user = format!(r#""userId":"u-{a}-{k}""#);
        let roll = rng.below(1000);
        let body = if roll < 200 {
            let path = if rng.below(10) < 3 {
                "/pricing"
            } else {
                "/docs"
            };
            format!(
                r#""type":"page",{user},"name":"Docs","properties":{{"path":"{path}"}}{context}"#
            )
        } else {
            let (name, properties) = match roll {
                200..=449 => ("Dashboard Viewed", String::new()),
                450..=549 => ("Report Shared", String::new()),
                550..=629 => ("Project Created", String::new()),
                630..=669 => ("Teammate Invited", String::new()),
                670..=699 => {
                    let provider = if rng.below(2) == 0 { "csv" } else { "postgres" };
                    (
                        "Integration Connected",
                        format!(r#"{{"provider":"{provider}"}}"#),
                    )
                }
                700..=799 => (
                    "API Batch Sent",
                    format!(r#"{{"calls":{}}}"#, rng.below(200)),
                ),
                800..=829 => ("Plan Limit Reached", String::new()),
                830..=859 => ("Support Ticket Opened", String::new()),
                860..=861 => ("Subscription Started", String::new()),
                _ => ("Settings Changed", String::new()),
            };
            let properties = if properties.is_empty() {
                String::new()
            } else {
                format!(r#","properties":{properties}"#)
            };
            format!(r#""type":"track",{user},"event":"{name}"{properties}{context}"#)
        };
        push(&mut raw, at, a, body);
    }
    raw.sort_by_key(|(at, _, _)| *at);
    raw.into_iter()
        .map(|(_, a, json)| {
            let event = parse_call(json.as_bytes(), None, None).expect("generated calls parse");
            (a, event)
        })
        .collect()
}

fn fresh_states(definition: &Definition) -> Vec<AccountState> {
    vec![AccountState::new(definition); ACCOUNTS]
}

fn apply_all(definition: &Definition, events: &[(usize, Event)]) -> Vec<AccountState> {
    let mut states = fresh_states(definition);
    for (a, e) in events {
        states[*a].apply(definition, e);
    }
    states
}

/// Bytes the allocator hands out for a request of `n` (glibc: 16-byte granules, 8 bytes of
/// header, 32 at least).
fn chunk(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

/// Approximate bytes of one state in memory: the struct, its vectors (by capacity: the
/// state's vectors are sized by the definition, a hit set's by its bound), every boxed string
/// and the trait map's entries, in allocator chunks.
fn in_memory_bytes(state: &AccountState) -> usize {
    let vec = |capacity: usize, item: usize| {
        if capacity == 0 {
            0
        } else {
            chunk(capacity * item)
        }
    };
    let set_bytes = |set: &HitSet| {
        vec(set.capacity(), size_of::<Hit>())
            + set
                .hits()
                .iter()
                .map(|h| chunk(h.message.len()) + chunk(h.user.len()))
                .sum::<usize>()
    };
    let sets = state
        .milestones
        .iter()
        .chain(&state.scoring)
        .chain(&state.user_facts);
    let traits: usize = state
        .traits()
        .iter()
        .map(|(k, t)| {
            // Key and value in a B-tree leaf (shared by up to 11 entries), the key's and the
            // message id's buffers, and a string value's buffer.
            size_of::<String>()
                + size_of::<TraitValue>()
                + chunk(k.len())
                + chunk(t.message.len())
                + t.value.as_str().map_or(0, |s| chunk(s.len()))
        })
        .sum();
    size_of::<AccountState>()
        + chunk(state.definition_version.len())
        + vec(state.milestones.len(), size_of::<HitSet>())
        + vec(state.scoring.len(), size_of::<HitSet>())
        + vec(state.user_facts.len(), size_of::<HitSet>())
        + sets.map(set_bytes).sum::<usize>()
        + traits
}

fn report_state_sizes(definition: &Definition, events: &[(usize, Event)]) {
    let states = apply_all(definition, events);
    let n = states.len() as f64;
    let serialized: Vec<usize> = states
        .iter()
        .map(|s| serde_json::to_vec(s).unwrap().len())
        .collect();
    let memory: Vec<usize> = states.iter().map(in_memory_bytes).collect();
    let hits: usize = states
        .iter()
        .flat_map(|s| s.milestones.iter().chain(&s.scoring).chain(&s.user_facts))
        .map(HitSet::len)
        .sum();
    let mut ledger = Ledger::new(definition);
    let qualified: usize = events.iter().map(|(_, e)| ledger.ingest(e).len()).sum();
    println!(
        "{} events, {} accounts: state per account: serialized JSON {:.0} B mean, {} B max; \
         in memory ~{:.0} B mean, ~{} B max; {:.1} hits per account; {} qualifications",
        events.len(),
        states.len(),
        serialized.iter().sum::<usize>() as f64 / n,
        serialized.iter().max().unwrap(),
        memory.iter().sum::<usize>() as f64 / n,
        memory.iter().max().unwrap(),
        hits as f64 / n,
        qualified,
    );
}

fn benches(c: &mut Criterion) {
    let definition = definition();
    let events = events();
    report_state_sizes(&definition, &events);

    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));

    group.bench_function("apply+verdict", |b| {
        b.iter_batched_ref(
            || fresh_states(&definition),
            |states| {
                for (a, e) in &events {
                    let state = &mut states[*a];
                    state.apply(&definition, e);
                    black_box(verdict(&definition, state, e.timestamp));
                }
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("apply", |b| {
        b.iter_batched_ref(
            || fresh_states(&definition),
            |states| {
                for (a, e) in &events {
                    black_box(states[*a].apply(&definition, e));
                }
            },
            BatchSize::PerIteration,
        )
    });

    let full = apply_all(&definition, &events);
    group.bench_function("verdict", |b| {
        b.iter(|| {
            for (a, e) in &events {
                black_box(verdict(&definition, &full[*a], e.timestamp));
            }
        })
    });

    group.bench_function("ledger ingest", |b| {
        b.iter_batched_ref(
            || Ledger::new(&definition),
            |ledger| {
                for (_, e) in &events {
                    black_box(ledger.ingest(e));
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);
