//! Bounded, idempotent sets of "hits" (matching events): the building block of account state.
//!
//! A milestone such as "3 projects within 14 days of sign-up" only ever needs the *earliest*
//! 3 matching events; "2 distinct users" only the earliest event of the first 2 users; "active
//! on 4 days in the last 7" only the latest event of the latest 4 days. A [`HitSet`] keeps
//! exactly that prefix and nothing else, so:
//!
//! * it is **bounded** by the definition (a threshold of N keeps at most N hits), whatever the
//!   number of events or users of the account;
//! * it is **idempotent**: a hit is identified by its key (message, user or day), and seeing it
//!   again changes nothing;
//! * it is **order-independent**: the kept prefix is a function of the *set* of hits seen, not
//!   of their arrival order. Eviction only drops hits ranked after the cut-off, and the cut-off
//!   only ever moves towards better ranks as hits arrive, so nothing evicted could have been
//!   needed later.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// A sum milestone keeps at most this many contributing events (a sum that needs more small
/// events than this to reach its threshold is under-counted; pick a coarser unit).
pub const MAX_SUM_HITS: usize = 4096;

/// The most hits a set makes room for at its first insert (a large threshold grows as
/// needed).
const MAX_RESERVED_HITS: usize = 16;

/// One matching event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "StoredHit")]
pub struct Hit {
    pub at: Timestamp,
    #[serde(rename = "m")]
    pub message: Box<str>,
    #[serde(rename = "u")]
    pub user: Box<str>,
    /// Contribution to a sum, in millionths (0 for other thresholds).
    #[serde(rename = "v", default, skip_serializing_if = "is_zero")]
    pub value: i64,
    /// [`tag`]s of `message` and `user`, kept beside the hit: looking for a duplicate then
    /// reads only the set's own contiguous memory, not every id's heap allocation (those
    /// cache misses were most of the cost of `apply`).
    #[serde(skip)]
    tags: (u32, u32),
    /// The hit's decay growth factor ([`crate::definition::Scoring::growth`]) when it is
    /// known (NaN: not worked out yet, as after reading a stored state).
    #[serde(skip)]
    growth: f64,
}

/// Equal when the stored fields are: tags and growth are derived from them.
impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
            && self.message == other.message
            && self.user == other.user
            && self.value == other.value
    }
}

impl Eq for Hit {}

impl Hit {
    /// The cached decay growth factor, when known.
    pub fn growth(&self) -> Option<f64> {
        (!self.growth.is_nan()).then_some(self.growth)
    }
}

/// A hit as stored; its tags are worked out again when it is read.
#[derive(Deserialize)]
struct StoredHit {
    at: Timestamp,
    #[serde(rename = "m")]
    message: Box<str>,
    #[serde(rename = "u")]
    user: Box<str>,
    #[serde(rename = "v", default)]
    value: i64,
}

impl From<StoredHit> for Hit {
    fn from(h: StoredHit) -> Hit {
        Hit {
            tags: (tag(&h.message), tag(&h.user)),
            growth: f64::NAN,
            at: h.at,
            message: h.message,
            user: h.user,
            value: h.value,
        }
    }
}

/// A summary of an id that tells most different ids apart without comparing them: its
/// length and three of its bytes (the last two and the middle one, where sequence numbers
/// and random ids differ).
fn tag(id: &str) -> u32 {
    let b = id.as_bytes();
    let n = b.len();
    if n == 0 {
        return 0;
    }
    (n as u32 & 0xff)
        | u32::from(b[n - 1]) << 8
        | u32::from(b[n.saturating_sub(2)]) << 16
        | u32::from(b[n / 2]) << 24
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Which end of history matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Keep the earliest hits: all-time and since-sign-up windows.
    Earliest,
    /// Keep the latest hits: sliding windows and recency-weighted points.
    Latest,
}

/// What the set must be able to answer, which decides its key and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The first N distinct events (by message id).
    Events(u32),
    /// The first event of each of the first K distinct users.
    Users(u32),
    /// The first event of each of the first D distinct UTC days.
    Days(u32),
    /// The shortest run of events whose values add up to the threshold (millionths).
    Sum(i64),
}

/// A hit about to be inserted; borrowed so that rejected hits allocate nothing.
#[derive(Debug, Clone, Copy)]
pub struct HitRef<'a> {
    pub at: Timestamp,
    pub message: &'a str,
    pub user: &'a str,
    pub value: i64,
    /// Its decay growth factor, if worked out (NaN otherwise).
    pub growth: f64,
}

impl HitRef<'_> {
    /// The hit, owned; `tags` are those of its message and user.
    fn to_owned_hit(self, tags: (u32, u32)) -> Hit {
        Hit {
            at: self.at,
            message: self.message.into(),
            user: self.user.into(),
            value: self.value,
            tags,
            growth: self.growth,
        }
    }
}

/// Makes `slot` hold `text`, reusing its buffer when the lengths match (ids mostly do).
pub(crate) fn refill(slot: &mut Box<str>, text: &str) {
    if slot.len() != text.len() {
        *slot = text.into();
        return;
    }
    // Capacity equals length: neither `push_str` nor `into_boxed_str` reallocates.
    let mut buffer = String::from(std::mem::take(slot));
    buffer.clear();
    buffer.push_str(text);
    *slot = buffer.into_boxed_str();
}

/// The hits kept for one milestone or scoring rule, best-ranked first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HitSet {
    hits: Vec<Hit>,
    /// The sum of the hits' decay growth factors, in order, when every one is known (NaN
    /// otherwise): a recency-weighted scoring rule's points are then one multiplication
    /// ([`crate::definition::DecayClock::set_weight`]). Derived, so not stored.
    #[serde(skip, default = "unknown")]
    growth_sum: f64,
}

fn unknown() -> f64 {
    f64::NAN
}

/// Equal when the hits are: the growth sum is derived from them.
impl PartialEq for HitSet {
    fn eq(&self, other: &Self) -> bool {
        self.hits == other.hits
    }
}

impl Eq for HitSet {}

fn rank(order: Order, a: (Timestamp, &str), b: (Timestamp, &str)) -> Ordering {
    match order {
        Order::Earliest => a.cmp(&b),
        Order::Latest => b.cmp(&a),
    }
}

impl HitSet {
    pub fn hits(&self) -> &[Hit] {
        &self.hits
    }

    pub fn len(&self) -> usize {
        self.hits.len()
    }

    /// How many hits fit without reallocating (for memory accounting).
    pub fn capacity(&self) -> usize {
        self.hits.capacity()
    }

    /// The sum of the hits' cached decay growth factors, in order, when all are cached.
    pub fn growth_sum(&self) -> Option<f64> {
        (!self.growth_sum.is_nan()).then_some(self.growth_sum)
    }

    fn refresh_growth_sum(&mut self) {
        // NaN when a factor is not cached: NaN propagates through the sum.
        self.growth_sum = self.hits.iter().map(|h| h.growth).sum();
    }

    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// Whether `a` has the key of `b` (whose message and user tags are `tags`).
    fn same_key(keep: Keep, a: &Hit, b: &HitRef<'_>, tags: (u32, u32)) -> bool {
        match keep {
            Keep::Events(_) | Keep::Sum(_) => a.tags.0 == tags.0 && *a.message == *b.message,
            Keep::Users(_) => a.tags.1 == tags.1 && *a.user == *b.user,
            Keep::Days(_) => a.at.day() == b.at.day(),
        }
    }

    /// The hit that completes the threshold, if the kept hits reach it.
    pub fn completion(&self, keep: Keep) -> Option<&Hit> {
        match keep {
            Keep::Events(n) | Keep::Users(n) | Keep::Days(n) => self.hits.get(n as usize - 1),
            Keep::Sum(target) => {
                let mut total = 0i64;
                self.hits.iter().find(|h| {
                    total = total.saturating_add(h.value);
                    total >= target
                })
            }
        }
    }

    /// [`HitSet::completion`] as of `now`: only hits at or before `now` count. (The same as
    /// `completion` when no hit is later than `now`, the usual case, checked first.)
    pub fn completion_as_of(&self, order: Order, keep: Keep, now: Timestamp) -> Option<&Hit> {
        let latest = match order {
            Order::Earliest => self.hits.last(),
            Order::Latest => self.hits.first(),
        };
        if latest.is_none_or(|h| h.at <= now) {
            return self.completion(keep);
        }
        let mut visible = self.hits.iter().filter(|h| h.at <= now);
        match keep {
            Keep::Events(n) | Keep::Users(n) | Keep::Days(n) => visible.nth(n as usize - 1),
            Keep::Sum(target) => {
                let mut total = 0i64;
                visible.find(|h| {
                    total = total.saturating_add(h.value);
                    total >= target
                })
            }
        }
    }

    fn is_full(&self, keep: Keep) -> bool {
        match keep {
            Keep::Events(n) | Keep::Users(n) | Keep::Days(n) => self.hits.len() >= n as usize,
            Keep::Sum(_) => self.completion(keep).is_some() || self.hits.len() >= MAX_SUM_HITS,
        }
    }

    /// Whether [`HitSet::insert`] would certainly ignore a hit at `at` with this message: the
    /// set is full and the hit ranks after its last. Lets callers skip testing filters on
    /// events that cannot matter any more (most of them, once an earliest-N set is full).
    pub fn rejects(&self, order: Order, keep: Keep, at: Timestamp, message: &str) -> bool {
        self.is_full(keep)
            && self.hits.last().is_some_and(|last| {
                rank(order, (at, message), (last.at, &last.message)) == Ordering::Greater
            })
    }

    /// Adds a hit; returns whether the set changed.
    pub fn insert(&mut self, order: Order, keep: Keep, hit: HitRef<'_>) -> bool {
        // Fast path: a full set ignores anything ranked after its last hit.
        if self.rejects(order, keep, hit.at, hit.message) {
            return false;
        }
        let key = (hit.at, hit.message);
        // The hit that makes room: an earlier-ranked copy of the same key is kept instead of
        // it; a full count drops its last hit (the new one ranks before it, see above).
        let tags = (tag(hit.message), tag(hit.user));
        let vacated = match self
            .hits
            .iter()
            .position(|h| Self::same_key(keep, h, &hit, tags))
        {
            Some(i) => {
                let existing = &self.hits[i];
                if rank(order, key, (existing.at, &existing.message)) != Ordering::Less {
                    return false;
                }
                Some(i)
            }
            None => match keep {
                Keep::Events(n) | Keep::Users(n) | Keep::Days(n)
                    if self.hits.len() >= n as usize =>
                {
                    Some(self.hits.len() - 1)
                }
                _ => None,
            },
        };
        let at = self
            .hits
            .partition_point(|h| rank(order, (h.at, &h.message), key) == Ordering::Less);
        match vacated {
            // The new hit ranks before the vacated one (at <= i): rotate the vacated slot into
            // place and reuse its allocations, sparing the allocator on the many events that
            // replace a hit of a sliding window or a recency-capped rule.
            Some(i) => {
                self.hits[at..=i].rotate_right(1);
                let slot = &mut self.hits[at];
                refill(&mut slot.message, hit.message);
                refill(&mut slot.user, hit.user);
                slot.at = hit.at;
                slot.value = hit.value;
                slot.tags = tags;
                slot.growth = hit.growth;
            }
            None => {
                if self.hits.capacity() == 0 {
                    // Room for the whole bound at once (most sets fill up): no regrowth, and
                    // no capacity beyond what the set can hold.
                    let bound = match keep {
                        Keep::Events(n) | Keep::Users(n) | Keep::Days(n) => n as usize,
                        Keep::Sum(_) => 4,
                    };
                    self.hits.reserve_exact(bound.min(MAX_RESERVED_HITS));
                }
                self.hits.insert(at, hit.to_owned_hit(tags))
            }
        }
        self.trim(keep);
        self.refresh_growth_sum();
        true
    }

    fn trim(&mut self, keep: Keep) {
        let len = match keep {
            Keep::Events(n) | Keep::Users(n) | Keep::Days(n) => n as usize,
            Keep::Sum(target) => {
                let mut total = 0i64;
                self.hits
                    .iter()
                    .position(|h| {
                        total = total.saturating_add(h.value);
                        total >= target
                    })
                    .map_or(MAX_SUM_HITS, |i| (i + 1).min(MAX_SUM_HITS))
            }
        };
        self.hits.truncate(len);
    }

    /// Caches each hit's decay growth factor, `growth(at)` (for the definition the set now
    /// follows).
    pub fn set_growth(&mut self, growth: impl Fn(Timestamp) -> f64) {
        for h in &mut self.hits {
            h.growth = growth(h.at);
        }
        self.refresh_growth_sum();
    }

    /// Adds every hit of `other`; returns whether this set changed.
    pub fn merge(&mut self, order: Order, keep: Keep, other: &HitSet) -> bool {
        let mut changed = false;
        for h in &other.hits {
            changed |= self.insert(
                order,
                keep,
                HitRef {
                    at: h.at,
                    message: &h.message,
                    user: &h.user,
                    value: h.value,
                    growth: h.growth,
                },
            );
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(at: i64, message: &'static str, user: &'static str) -> HitRef<'static> {
        HitRef {
            at: Timestamp(at),
            message,
            user,
            value: 0,
            growth: f64::NAN,
        }
    }

    fn messages(set: &HitSet) -> Vec<&str> {
        set.hits().iter().map(|h| &*h.message).collect()
    }

    #[test]
    fn keeps_the_earliest_n_events_and_ignores_duplicates() {
        let mut set = HitSet::default();
        let keep = Keep::Events(2);
        assert!(set.insert(Order::Earliest, keep, hit(30, "c", "u")));
        assert!(set.insert(Order::Earliest, keep, hit(10, "a", "u")));
        assert!(
            !set.insert(Order::Earliest, keep, hit(10, "a", "u")),
            "duplicate"
        );
        assert!(set.insert(Order::Earliest, keep, hit(20, "b", "u")));
        assert!(
            !set.insert(Order::Earliest, keep, hit(40, "d", "u")),
            "after a full prefix"
        );
        assert_eq!(messages(&set), ["a", "b"]);
        assert_eq!(&*set.completion(keep).unwrap().message, "b");
    }

    /// A bounded set allocates room for its bound once, not a power of two above it.
    #[test]
    fn a_count_set_makes_room_for_its_bound_once() {
        let mut set = HitSet::default();
        let keep = Keep::Events(3);
        for (at, m) in [(50, "e"), (40, "d"), (30, "c"), (20, "b"), (10, "a")] {
            set.insert(Order::Earliest, keep, hit(at, m, "u"));
        }
        assert_eq!(messages(&set), ["a", "b", "c"]);
        assert_eq!(set.capacity(), 3);
    }

    #[test]
    fn a_retried_message_with_a_different_time_keeps_its_best_copy() {
        let mut set = HitSet::default();
        let keep = Keep::Events(3);
        set.insert(Order::Earliest, keep, hit(20, "a", "u"));
        set.insert(Order::Earliest, keep, hit(15, "a", "u"));
        assert_eq!(set.len(), 1);
        assert_eq!(set.hits()[0].at, Timestamp(15));
    }

    #[test]
    fn distinct_users_keep_each_users_first_event() {
        let mut set = HitSet::default();
        let keep = Keep::Users(2);
        set.insert(Order::Earliest, keep, hit(50, "m1", "ann"));
        set.insert(Order::Earliest, keep, hit(10, "m2", "ann"));
        set.insert(Order::Earliest, keep, hit(60, "m3", "bob"));
        set.insert(Order::Earliest, keep, hit(70, "m4", "cat"));
        assert_eq!(messages(&set), ["m2", "m3"]);
        assert_eq!(&*set.completion(keep).unwrap().user, "bob");
    }

    #[test]
    fn latest_order_keeps_the_most_recent() {
        let mut set = HitSet::default();
        let keep = Keep::Days(2);
        let day = crate::time::MS_PER_DAY;
        set.insert(Order::Latest, keep, hit(day, "a", "u"));
        set.insert(Order::Latest, keep, hit(3 * day, "b", "u"));
        set.insert(Order::Latest, keep, hit(3 * day + 5, "c", "u"));
        set.insert(Order::Latest, keep, hit(2 * day, "d", "u"));
        assert_eq!(messages(&set), ["c", "d"]);
    }

    #[test]
    fn sums_keep_the_shortest_prefix_reaching_the_target() {
        let mut set = HitSet::default();
        let keep = Keep::Sum(10);
        for (at, m, v) in [(3, "c", 6), (1, "a", 6), (2, "b", 6), (0, "z", 5)] {
            set.insert(
                Order::Earliest,
                keep,
                HitRef {
                    at: Timestamp(at),
                    message: m,
                    user: "u",
                    value: v,
                    growth: f64::NAN,
                },
            );
        }
        assert_eq!(messages(&set), ["z", "a"]);
        assert_eq!(&*set.completion(keep).unwrap().message, "a");
    }

    /// Stored states must stay readable: a hit is stored as `at`, `m`, `u` and `v` (when not
    /// 0), whatever its layout in memory.
    #[test]
    fn hits_are_stored_as_at_message_user_value() {
        let mut set = HitSet::default();
        let keep = Keep::Sum(10_000_000);
        let mut h = hit(2, "m-2", "bob");
        h.value = 3_000_000;
        set.insert(Order::Earliest, keep, h);
        set.insert(Order::Earliest, keep, hit(1, "m-1", "ann"));
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(
            json,
            r#"[{"at":"1970-01-01T00:00:00.001Z","m":"m-1","u":"ann"},{"at":"1970-01-01T00:00:00.002Z","m":"m-2","u":"bob","v":3000000}]"#
        );
        let back: HitSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert_eq!(
            (&*back.hits()[1].message, &*back.hits()[1].user),
            ("m-2", "bob")
        );
    }
}
