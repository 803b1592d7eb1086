//! Word lists for company names, people, domains and devices.

use rand::seq::IndexedRandom;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

const BRAND_WORDS: &[&str] = &[
    "Acme",
    "Alder",
    "Apex",
    "Arbor",
    "Aster",
    "Atlas",
    "Aurora",
    "Beacon",
    "Birch",
    "Blue",
    "Bright",
    "Canyon",
    "Cedar",
    "Cinder",
    "Clear",
    "Cobalt",
    "Copper",
    "Coral",
    "Crest",
    "Delta",
    "Drift",
    "Ember",
    "Evergreen",
    "Falcon",
    "Fern",
    "Fjord",
    "Forge",
    "Granite",
    "Harbor",
    "Hawk",
    "Helix",
    "Horizon",
    "Indigo",
    "Iron",
    "Juniper",
    "Keystone",
    "Lark",
    "Lumen",
    "Maple",
    "Meadow",
    "Meridian",
    "Mosaic",
    "Nimbus",
    "North",
    "Nova",
    "Oak",
    "Onyx",
    "Orbit",
    "Pine",
    "Pioneer",
    "Prism",
    "Quartz",
    "Radiant",
    "Redwood",
    "Ridge",
    "River",
    "Sable",
    "Sage",
    "Silver",
    "Sky",
    "Slate",
    "Solstice",
    "Spark",
    "Spruce",
    "Stone",
    "Summit",
    "Swift",
    "Tidal",
    "Timber",
    "True",
    "Vertex",
    "Willow",
    "Zephyr",
];

const SECOND_WORDS: &[&str] = &[
    "bay", "bridge", "brook", "field", "gate", "hill", "lake", "light", "line", "mark", "path",
    "point", "port", "rock", "stack", "stream", "view", "wave", "well", "wind",
];

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ra", "ve", "zen", "tor", "qua", "lix", "dro", "pel", "sy", "nu", "ta", "vo",
    "rin", "mo", "bel", "cor", "dia", "fi", "gra", "hy", "jo", "ko", "lum", "nex", "ori", "pra",
    "sol", "tri", "ul", "vex", "wy", "xa", "yo",
];

const SUFFIXES: &[&str] = &[
    "Labs",
    "Analytics",
    "Systems",
    "Software",
    "Health",
    "Logistics",
    "Media",
    "Capital",
    "Commerce",
    "Data",
    "Works",
    "Group",
    "Technologies",
    "Studio",
    "Partners",
    "Cloud",
    "Retail",
    "Foods",
    "Robotics",
    "Energy",
    "Learning",
    "Insights",
    "AI",
    "HQ",
    "Inc",
];

const TLDS: &[&str] = &[
    "com", "com", "com", "com", "io", "io", "co", "ai", "de", "co.uk", "fr", "nl", "app",
];

pub const INDUSTRIES: &[(&str, u32)] = &[
    ("Software", 26),
    ("Fintech", 9),
    ("E-commerce", 10),
    ("Marketing", 9),
    ("Healthcare", 8),
    ("Education", 7),
    ("Manufacturing", 6),
    ("Retail", 6),
    ("Media", 5),
    ("Logistics", 5),
    ("Consulting", 5),
    ("Non-profit", 4),
];

const FIRST_NAMES: &[&str] = &[
    "Ada", "Aisha", "Alex", "Amara", "Ana", "Anders", "Ben", "Bruno", "Camille", "Carlos", "Chen",
    "Chloe", "Dana", "Daniel", "Diego", "Elena", "Emma", "Fatima", "Felix", "Grace", "Hannah",
    "Hiro", "Ines", "Isaac", "Ivan", "Jamal", "Jana", "Jonas", "Julia", "Kai", "Kofi", "Lara",
    "Leo", "Lina", "Lucas", "Maya", "Mei", "Mia", "Nadia", "Noah", "Nora", "Olga", "Omar", "Paula",
    "Priya", "Rafael", "Rosa", "Sam", "Sara", "Sofia", "Tariq", "Theo", "Tom", "Uma", "Vera",
    "Wei", "Yara", "Yusuf", "Zoe",
];

const LAST_NAMES: &[&str] = &[
    "Adams", "Alvarez", "Berg", "Brown", "Chen", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia",
    "Gupta", "Hansen", "Ibrahim", "Ito", "Jensen", "Kim", "Kowalski", "Larsen", "Lopez", "Martin",
    "Meyer", "Moreau", "Nakamura", "Nguyen", "Novak", "Okafor", "Olsen", "Patel", "Petrov",
    "Quinn", "Rossi", "Santos", "Schmidt", "Silva", "Singh", "Smith", "Tanaka", "Torres", "Varga",
    "Wagner", "Walsh", "Weber", "Wong", "Yilmaz", "Zhang",
];

/// Consumer mailboxes some people sign up with.
pub const FREE_MAIL: &[&str] = &[
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "outlook.com",
    "yahoo.com",
    "hotmail.com",
    "icloud.com",
    "proton.me",
];

/// Domains of competitors that sign up to look around (the example definition gates them).
pub const COMPETITOR_DOMAINS: &[&str] = &["rivalytics.com", "chartcorp.io"];

pub const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
];

pub const JOB_TITLES: &[&str] = &[
    "Data Analyst",
    "Head of Data",
    "Engineer",
    "Product Manager",
    "CTO",
    "Founder",
    "Marketing Lead",
    "Analytics Engineer",
    "Operations",
];

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, list: &[&'a str]) -> &'a str {
    list.choose(rng).copied().unwrap_or_default()
}

/// A company-like name: "Harborlight Analytics", "Korvana", "Cobalt Systems".
pub fn company_name(rng: &mut ChaCha8Rng) -> String {
    let brand = match rng.random_range(0..3) {
        0 => format!("{}{}", pick(rng, BRAND_WORDS), pick(rng, SECOND_WORDS)),
        1 => pick(rng, BRAND_WORDS).to_owned(),
        _ => {
            let n = rng.random_range(2..=3);
            let word: String = (0..n).map(|_| pick(rng, SYLLABLES)).collect();
            capitalize(&word)
        }
    };
    if rng.random_bool(0.65) {
        format!("{brand} {}", pick(rng, SUFFIXES))
    } else {
        brand
    }
}

/// The web domain of a company name: "Cobalt Systems" → "cobaltsystems.io".
pub fn domain_of(name: &str, rng: &mut ChaCha8Rng) -> String {
    let words: Vec<String> = name
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .collect();
    // Often the brand alone ("cobalt.io"), sometimes brand and suffix, sometimes hyphenated.
    let stem = match (words.len(), rng.random_range(0..4)) {
        (1, _) | (_, 0 | 1) => words[0].clone(),
        (_, 2) => words.concat(),
        _ => words.join("-"),
    };
    format!("{stem}.{}", pick(rng, TLDS))
}

pub fn industry(rng: &mut ChaCha8Rng) -> &'static str {
    INDUSTRIES
        .choose_weighted(rng, |(_, w)| *w)
        .map(|(name, _)| *name)
        .unwrap_or("Software")
}

/// (first name, last name).
pub fn person(rng: &mut ChaCha8Rng) -> (&'static str, &'static str) {
    (pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES))
}

pub fn free_mail(rng: &mut ChaCha8Rng) -> &'static str {
    pick(rng, FREE_MAIL)
}

pub fn competitor(rng: &mut ChaCha8Rng) -> &'static str {
    pick(rng, COMPETITOR_DOMAINS)
}

pub fn user_agent(rng: &mut ChaCha8Rng) -> &'static str {
    pick(rng, USER_AGENTS)
}

pub fn job_title(rng: &mut ChaCha8Rng) -> &'static str {
    pick(rng, JOB_TITLES)
}

/// A work address in one of the usual shapes: ana.silva@, asilva@, ana@.
pub fn work_email(first: &str, last: &str, domain: &str, rng: &mut ChaCha8Rng) -> String {
    let (first, last) = (first.to_ascii_lowercase(), last.to_ascii_lowercase());
    match rng.random_range(0..5) {
        0 | 1 => format!("{first}.{last}@{domain}"),
        2 => format!("{}{last}@{domain}", &first[..1]),
        3 => format!("{first}@{domain}"),
        _ => format!("{first}{}@{domain}", &last[..1]),
    }
}

/// A consumer address: ana.silva84@gmail.com.
pub fn personal_email(first: &str, last: &str, domain: &str, rng: &mut ChaCha8Rng) -> String {
    let (first, last) = (first.to_ascii_lowercase(), last.to_ascii_lowercase());
    match rng.random_range(0..3) {
        0 => format!("{first}.{last}{}@{domain}", rng.random_range(1..99)),
        1 => format!("{first}{last}@{domain}"),
        _ => format!("{}.{last}@{domain}", &first[..1]),
    }
}
