//! Each account's hidden plan: who its people are, how keen it is, and the key moments of its
//! trial. Drawn once per account from the account's own random stream; the day-by-day
//! generator in [`crate::day`] turns it into Segment calls.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::names;
use crate::random::{exponential, normal, poisson, short_id, stream, uniform, uuid};
use crate::SimConfig;

pub const SEC: i64 = 1_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;
/// Length of a working day, from the account's `work_start`.
pub const WORKDAY: i64 = 9 * HOUR;

/// The random stream an account's plan is drawn from (day streams use the day number).
const PLAN_STREAM: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A normal trial.
    Trial,
    /// Already a customer (plan "pro"): the example definition gates it.
    Paying,
    /// A competitor looking around: busy, never buys.
    Competitor,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub anonymous_id: String,
    pub email: String,
    pub name: String,
    pub title: &'static str,
    /// When the user identified (signed up or accepted an invitation).
    pub joined: i64,
    /// When the user's `group` call links them to the account (sometimes much later).
    pub grouped: i64,
    /// Relative activity of this person.
    pub activity: f64,
    /// Share of this user's product events sent from the browser (with sentAt etc.).
    pub client_share: f64,
    /// The device clock's error, in ms.
    pub skew: i64,
    /// The user's time zone offset in minutes, for local-time timestamps.
    pub tz_minutes: i32,
    pub user_agent: &'static str,
    /// Sends API batches (a developer).
    pub developer: bool,
}

/// What a scripted action sends.
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    /// A marketing page seen before signing up: anonymousId only.
    AnonPage {
        path: &'static str,
    },
    /// A page seen by an identified user.
    Page {
        path: &'static str,
    },
    SignedUp,
    Identify,
    /// `full`: all account traits; otherwise just the name.
    Group {
        full: bool,
    },
    ProjectCreated {
        template: &'static str,
    },
    TeammateInvited {
        email: String,
        role: &'static str,
    },
    IntegrationConnected {
        provider: &'static str,
    },
    PlanLimitReached {
        limit: &'static str,
    },
    SupportTicketOpened {
        topic: &'static str,
    },
    SubscriptionStarted {
        plan: &'static str,
        seats: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Action {
    pub at: i64,
    pub user: usize,
    pub what: What,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub kind: Kind,
    /// Hidden keenness, 0..1: drives everything the account does.
    pub intent: f64,
    pub employees: Value,
    pub industry: &'static str,
    pub do_not_contact: bool,
    /// Sign-up time (the `created_at` trait).
    pub signup: i64,
    /// Start of the working day, as ms after UTC midnight.
    pub work_start: i64,
    /// Days after sign-up the account stays engaged before trickling off.
    pub horizon: f64,
    /// Share of product events that name the account in `context.groupId`.
    pub group_context: f64,
    /// Expected API batches per active day of a developer (0: no API use).
    pub api_rate: f64,
    /// Largest `calls` in one API batch.
    pub api_batch_max: f64,
    pub users: Vec<User>,
    /// Sorted by time.
    pub actions: Vec<Action>,
    pub converted_at: Option<i64>,
    pub projects: Vec<String>,
}

impl Account {
    pub fn plan_at(&self, at: i64) -> &'static str {
        match (self.kind, self.converted_at) {
            (Kind::Paying, _) => "pro",
            (_, Some(c)) if at >= c => "pro",
            _ => "trial",
        }
    }

    /// Users who have joined by `at`.
    pub fn joined_by(&self, at: i64) -> impl Iterator<Item = usize> + '_ {
        self.users
            .iter()
            .enumerate()
            .filter(move |(_, u)| u.joined <= at)
            .map(|(i, _)| i)
    }
}

fn lerp(a: f64, b: f64, t: f64) -> f64 {
    a + (b - a) * t
}

/// Monday = 0 ... Sunday = 6, for a UTC time in ms.
pub fn weekday(at: i64) -> i64 {
    (at.div_euclid(DAY) + 3).rem_euclid(7)
}

pub struct Planner<'a> {
    pub config: &'a SimConfig,
    rng: ChaCha8Rng,
}

impl<'a> Planner<'a> {
    pub fn new(config: &'a SimConfig, index: usize) -> Self {
        Planner {
            config,
            rng: stream(config.seed, index as u64, PLAN_STREAM),
        }
    }

    fn start(&self) -> i64 {
        self.config.start.millis()
    }

    fn end(&self) -> i64 {
        self.start() + i64::from(self.config.days) * DAY
    }

    /// Moves a time into working hours (and mostly off weekends).
    fn at_work(&mut self, at: i64, work_start: i64) -> i64 {
        let mut day = at - at.rem_euclid(DAY);
        let tod = at - day;
        let mut at = at;
        if tod < work_start {
            at = day + work_start + self.rng.random_range(0..90 * MIN);
        } else if tod >= work_start + WORKDAY {
            day += DAY;
            at = day + work_start + self.rng.random_range(0..90 * MIN);
        }
        let wd = weekday(at);
        if wd >= 5 && self.rng.random_bool(0.75) {
            at += (7 - wd) * DAY;
        }
        at
    }

    pub fn account(mut self, index: usize) -> Account {
        let end = self.end();
        let rng = &mut self.rng;
        let id = format!("acct_{index:04}");
        let name = names::company_name(rng);
        let domain = names::domain_of(&name, rng);
        let kind = match rng.random::<f64>() {
            r if r < 0.025 => Kind::Paying,
            r if r < 0.037 => Kind::Competitor,
            _ => Kind::Trial,
        };
        let intent = match kind {
            Kind::Competitor => uniform(rng, 0.55, 0.95),
            _ => rng.random::<f64>().powf(2.2),
        };
        let employees_n = (25f64.ln() + 1.35 * normal(rng))
            .exp()
            .round()
            .clamp(1.0, 20_000.0) as u64;
        let employees = match rng.random::<f64>() {
            r if r < 0.83 => Value::from(employees_n),
            r if r < 0.97 => Value::from(employees_n.to_string()),
            _ => Value::from(
                match employees_n {
                    0..=10 => "1-10",
                    11..=50 => "11-50",
                    51..=200 => "51-200",
                    201..=1000 => "201-1000",
                    _ => "1000+",
                }
                .to_owned(),
            ),
        };
        let industry = names::industry(rng);
        let do_not_contact = rng.random_bool(0.012);

        let days = self.config.days.max(1);
        let signup_span = (f64::from(days) * 0.8).max(1.0);
        let signup_day = (rng.random::<f64>() * signup_span) as i64;
        let work_start = rng.random_range(6 * HOUR..11 * HOUR);
        let mut signup = self.config.start.millis()
            + signup_day * DAY
            + work_start
            + rng.random_range(30 * MIN..WORKDAY - 30 * MIN);
        if weekday(signup) >= 5 && rng.random_bool(0.6) {
            // Fewer sign-ups at weekends: most move to the Monday (if still in range).
            let monday = signup + (7 - weekday(signup)) * DAY;
            if monday < end {
                signup = monday;
            }
        }
        let mut horizon =
            (2f64.ln() + (75f64.ln() - 2f64.ln()) * intent).exp() * uniform(rng, 0.6, 1.4);
        if kind == Kind::Paying {
            horizon = horizon.max(20.0);
        }

        let founder_free_mail =
            kind == Kind::Trial && rng.random_bool(if employees_n < 5 { 0.45 } else { 0.1 });
        let converted_at = if kind == Kind::Trial {
            let fit = if employees_n >= 20 { 1.25 } else { 0.55 };
            let fit = if founder_free_mail { fit * 0.5 } else { fit };
            let p = ((0.008 + 0.85 * intent.powi(3)) * fit).min(0.95);
            if rng.random_bool(p) {
                let offset = match rng.random::<f64>() {
                    r if r < 0.2 => uniform(rng, 1.5, 7.0),
                    r if r < 0.8 => uniform(rng, 9.0, 18.0),
                    _ => uniform(rng, 18.0, 40.0),
                };
                horizon = horizon.max(offset + 30.0);
                Some(signup + (offset * DAY as f64) as i64)
            } else {
                None
            }
        } else {
            None
        };

        let group_context = match rng.random_range(0..3) {
            0 => 0.95,
            1 => 0.6,
            _ => 0.25,
        };
        let api = rng.random_bool(0.15 + 0.5 * intent);
        let api_rate = if api { 0.8 + 3.0 * intent } else { 0.0 };
        let api_batch_max = 40.0 + 300.0 * intent;

        let mut account = Account {
            id,
            name,
            domain,
            kind,
            intent,
            employees,
            industry,
            do_not_contact,
            signup,
            work_start,
            horizon,
            group_context,
            api_rate,
            api_batch_max,
            users: Vec::new(),
            actions: Vec::new(),
            converted_at,
            projects: Vec::new(),
        };
        let converted_at = account.converted_at.map(|c| self.at_work(c, work_start));
        account.converted_at = converted_at.filter(|&c| c < end);
        self.people(&mut account, employees_n, founder_free_mail);
        self.script(&mut account);
        account.actions.sort_by_key(|a| a.at);
        account
    }

    fn new_user(&mut self, joined: i64, email: String, first: &str, last: &str) -> User {
        let rng = &mut self.rng;
        let skew = if rng.random_bool(0.1) {
            rng.random_range(-2 * HOUR..2 * HOUR)
        } else {
            rng.random_range(-3 * SEC..3 * SEC)
        };
        User {
            id: format!("user_{}", short_id(rng, 10)),
            anonymous_id: uuid(rng),
            email,
            name: format!("{first} {last}"),
            title: names::job_title(rng),
            joined,
            grouped: joined,
            activity: uniform(rng, 0.4, 1.3),
            client_share: uniform(rng, 0.4, 0.9),
            skew,
            tz_minutes: [-480, -300, -240, 0, 0, 60, 60, 120, 330][rng.random_range(0..9)],
            user_agent: names::user_agent(rng),
            developer: false,
        }
    }

    fn email_for(&mut self, account: &Account, first: &str, last: &str, free_mail: bool) -> String {
        if free_mail {
            let domain = names::free_mail(&mut self.rng);
            names::personal_email(first, last, domain, &mut self.rng)
        } else {
            names::work_email(first, last, &account.domain, &mut self.rng)
        }
    }

    /// The founder and the teammates who accept invitations, with their invitations.
    fn people(&mut self, account: &mut Account, employees: u64, founder_free_mail: bool) {
        let intent = account.intent;
        let (first, last) = names::person(&mut self.rng);
        let email = if account.kind == Kind::Competitor {
            let domain = names::competitor(&mut self.rng);
            names::work_email(first, last, domain, &mut self.rng)
        } else {
            self.email_for(account, first, last, founder_free_mail)
        };
        let mut founder = self.new_user(account.signup, email, first, last);
        founder.grouped = if self.rng.random_bool(0.9) {
            account.signup + self.rng.random_range(2 * SEC..40 * SEC)
        } else {
            // The backend sends the group call later: early events wait for it.
            account.signup + self.rng.random_range(HOUR..5 * HOUR)
        };
        founder.activity = founder.activity.max(0.9);
        account.users.push(founder);

        let max_users = employees.clamp(1, 12) as usize;
        let wanted = 1.0
            + intent.powf(1.5) * 7.0 * uniform(&mut self.rng, 0.4, 1.5)
            + self.rng.random::<f64>();
        let n_users = (wanted as usize).clamp(1, max_users);
        let horizon_end = account.signup + (account.horizon * DAY as f64) as i64;
        let mut invite_times: Vec<i64> = (1..n_users)
            .map(|_| {
                let days = exponential(&mut self.rng, lerp(14.0, 1.2, intent));
                account.signup + (days * DAY as f64) as i64 + self.rng.random_range(MIN..20 * MIN)
            })
            .collect();
        invite_times.sort_unstable();
        for invited in invite_times {
            let invited = self.at_work(invited, account.work_start);
            if invited > horizon_end {
                break;
            }
            let inviter = self.someone(account, invited);
            let accepted = invited
                + if self.rng.random_bool(0.7) {
                    self.rng.random_range(2 * MIN..3 * HOUR)
                } else {
                    self.rng.random_range(12 * HOUR..48 * HOUR)
                };
            let accepted = self.at_work(accepted, account.work_start);
            let (first, last) = names::person(&mut self.rng);
            let free = self.rng.random_bool(0.06);
            let email = self.email_for(account, first, last, free);
            let mut user = self.new_user(accepted, email.clone(), first, last);
            user.grouped = if self.rng.random_bool(0.7) {
                accepted + self.rng.random_range(5 * SEC..90 * SEC)
            } else {
                accepted + self.rng.random_range(HOUR..26 * HOUR)
            };
            let role = ["member", "member", "admin", "viewer"][self.rng.random_range(0..4)];
            account.actions.push(Action {
                at: invited,
                user: inviter,
                what: What::TeammateInvited { email, role },
            });
            account.users.push(user);
        }
        // Developers: the founder or an early teammate sends the API traffic.
        if account.api_rate > 0.0 {
            let n = account.users.len();
            let dev = if n > 1 && self.rng.random_bool(0.6) {
                1
            } else {
                0
            };
            account.users[dev].developer = true;
            if n > 2 && self.rng.random_bool(0.3) {
                account.users[2].developer = true;
            }
        }
    }

    /// A user who has joined by `at`; the founder more often than not.
    fn someone(&mut self, account: &Account, at: i64) -> usize {
        let joined: Vec<usize> = account.joined_by(at).collect();
        if joined.len() <= 1 || self.rng.random_bool(0.45) {
            0
        } else {
            joined[self.rng.random_range(0..joined.len())]
        }
    }

    fn push(&mut self, account: &mut Account, at: i64, user: usize, what: What) {
        account.actions.push(Action { at, user, what });
    }

    /// A working-hours time `days` (a random draw) after sign-up, if the account is still
    /// engaged then.
    fn engaged_time(&mut self, account: &Account, days: f64) -> Option<i64> {
        if days > account.horizon {
            return None;
        }
        let at = account.signup + (days * DAY as f64) as i64;
        Some(self.at_work(at, account.work_start))
    }

    fn script(&mut self, account: &mut Account) {
        let intent = account.intent;
        let signup = account.signup;
        let start = self.start();

        // Before signing up: anonymous visits to the marketing site.
        if self.rng.random_bool(0.55) {
            let mut at = signup - self.rng.random_range(3 * MIN..90 * MIN);
            let mut pages = vec!["/"];
            if self.rng.random_bool(0.6) {
                pages.push("/pricing");
            }
            if self.rng.random_bool(0.3) {
                pages.push("/docs");
            }
            pages.push("/signup");
            for path in pages {
                if at >= start {
                    self.push(account, at, 0, What::AnonPage { path });
                }
                at += self.rng.random_range(20 * SEC..4 * MIN);
            }
            if self.rng.random_bool(0.35) {
                let mut at = signup - self.rng.random_range(DAY..6 * DAY);
                for path in ["/", "/customers", "/pricing"] {
                    if at >= start && self.rng.random_bool(0.8) {
                        self.push(account, at, 0, What::AnonPage { path });
                    }
                    at += self.rng.random_range(30 * SEC..3 * MIN);
                }
            }
        }
        // Signing up: a track call before the group call links the founder (late linking).
        self.push(account, signup, 0, What::SignedUp);
        self.push(account, signup + SEC, 0, What::Identify);
        let grouped = account.users[0].grouped;
        self.push(account, grouped, 0, What::Group { full: true });

        // Teammates: an anonymous look at the invitation page, identify, later the group call.
        for u in 1..account.users.len() {
            let (joined, grouped) = (account.users[u].joined, account.users[u].grouped);
            if self.rng.random_bool(0.35) {
                let at = joined - self.rng.random_range(10 * SEC..120 * SEC);
                self.push(
                    account,
                    at,
                    u,
                    What::AnonPage {
                        path: "/invite/accept",
                    },
                );
            }
            self.push(account, joined, u, What::Identify);
            let full = self.rng.random_bool(0.5);
            self.push(account, grouped, u, What::Group { full });
        }

        // Invitations nobody accepted (yet).
        let unaccepted = poisson(&mut self.rng, 0.2 + 1.6 * intent);
        for _ in 0..unaccepted {
            let days = exponential(&mut self.rng, lerp(14.0, 3.0, intent));
            if let Some(at) = self.engaged_time(account, days) {
                let user = self.someone(account, at);
                let (first, last) = names::person(&mut self.rng);
                let email = names::work_email(first, last, &account.domain.clone(), &mut self.rng);
                self.push(
                    account,
                    at,
                    user,
                    What::TeammateInvited {
                        email,
                        role: "member",
                    },
                );
            }
        }

        // Projects.
        let projects = poisson(&mut self.rng, 0.2 + 6.0 * intent.powf(2.2));
        for _ in 0..projects {
            let days = exponential(&mut self.rng, lerp(9.0, 2.0, intent));
            if let Some(at) = self.engaged_time(account, days) {
                let user = self.someone(account, at);
                let template = [
                    "blank",
                    "blank",
                    "saas-metrics",
                    "marketing",
                    "ecommerce",
                    "finance",
                ][self.rng.random_range(0..6)];
                account
                    .projects
                    .push(format!("prj_{}", short_id(&mut self.rng, 8)));
                self.push(account, at, user, What::ProjectCreated { template });
            }
        }

        // Integrations: the CSV upload is the easy first step; a real data source is commitment.
        if self.rng.random_bool(0.4) {
            let days = exponential(&mut self.rng, 2.5);
            if let Some(at) = self.engaged_time(account, days) {
                let user = self.someone(account, at);
                self.push(
                    account,
                    at,
                    user,
                    What::IntegrationConnected { provider: "csv" },
                );
            }
        }
        let real = if self.rng.random_bool(0.04 + 0.8 * intent * intent) {
            1 + u32::from(self.rng.random_bool(0.2 * intent))
        } else {
            0
        };
        for _ in 0..real {
            let days = exponential(&mut self.rng, lerp(9.0, 1.5, intent));
            if let Some(at) = self.engaged_time(account, days) {
                let user = self.someone(account, at);
                let provider = if self.rng.random_bool(0.55) {
                    "postgres"
                } else {
                    "bigquery"
                };
                self.push(account, at, user, What::IntegrationConnected { provider });
            }
        }

        // Pricing page visits, more of them close to a purchase.
        let visits = poisson(&mut self.rng, 0.2 + 4.0 * intent.powf(1.5));
        let span = account.horizon.min(30.0);
        for _ in 0..visits {
            let days = uniform(&mut self.rng, 0.0, span);
            if let Some(at) = self.engaged_time(account, days) {
                let user = self.someone(account, at);
                let path = [
                    "/pricing",
                    "/pricing",
                    "/pricing?plan=team",
                    "/pricing#compare",
                ][self.rng.random_range(0..4)];
                self.push(account, at, user, What::Page { path });
            }
        }
        if let Some(converted) = account.converted_at {
            for _ in 0..1 + poisson(&mut self.rng, 2.0) {
                let at = converted - self.rng.random_range(10 * MIN..5 * DAY);
                if at > signup {
                    let user = self.someone(account, at);
                    self.push(account, at, user, What::Page { path: "/pricing" });
                }
            }
            let buyer = self.someone(account, converted);
            let plan = if self.rng.random_bool(0.7) {
                "team"
            } else {
                "business"
            };
            let seats = account.users.len().max(3) as u32;
            self.push(
                account,
                converted,
                buyer,
                What::SubscriptionStarted { plan, seats },
            );
            let at = converted + self.rng.random_range(5 * SEC..10 * MIN);
            self.push(account, at, buyer, What::Group { full: true });
        }

        // Limits hit by heavy users, and support tickets.
        if account.api_rate > 0.0 {
            for _ in 0..poisson(&mut self.rng, 1.5 * intent) {
                let days = uniform(&mut self.rng, 1.0, account.horizon.min(40.0));
                if let Some(at) = self.engaged_time(account, days) {
                    let user = self.someone(account, at);
                    let limit = ["api_calls", "api_calls", "seats", "projects"]
                        [self.rng.random_range(0..4)];
                    self.push(account, at, user, What::PlanLimitReached { limit });
                }
            }
        }
        for _ in 0..poisson(&mut self.rng, 0.25 + 0.3 * (1.0 - intent)) {
            let days = uniform(&mut self.rng, 0.0, account.horizon.min(30.0));
            if let Some(at) = self.engaged_time(account, days) {
                let user = self.someone(account, at);
                let topic =
                    ["bug", "integration", "billing", "question"][self.rng.random_range(0..4)];
                self.push(account, at, user, What::SupportTicketOpened { topic });
            }
        }
        if account.projects.is_empty() {
            account
                .projects
                .push(format!("prj_{}", short_id(&mut self.rng, 8)));
        }
    }
}
