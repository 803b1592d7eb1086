//! Sales alert delivery: the notify function's library.
//!
//! * [`settings`]: a tenant's destinations, routing rules, suppression and link template,
//!   checked with every problem reported at once;
//! * [`render`]: what an alert says (milestones met when and by whom, most active users, fit,
//!   definition version, link) as Slack Block Kit, the versioned webhook payload, e-mail;
//! * [`signing`]: webhook signatures (HMAC-SHA256 over `timestamp.body`), and how to verify;
//! * [`retry`]: bounded attempts, exponential backoff with full jitter, `Retry-After`;
//! * [`channels`]: one attempt over HTTP or e-mail (SES, or a directory locally);
//! * [`notifier`]: one alert, end to end, exactly once per receiver (claim, send, mark: see
//!   `pql_store::deliveries`);
//! * [`secret`]: secrets that never print;
//! * [`secrets`]: secrets kept in SSM Parameter Store or Secrets Manager, and the deployment's
//!   defaults, resolved when sent and cached briefly.

pub mod channels;
pub mod notifier;
pub mod render;
pub mod retry;
pub mod secret;
pub mod secrets;
pub mod settings;
pub mod signing;

pub use notifier::{AlertOutcome, Notifier, NotifyError, Outcome};
pub use settings::{Settings, SettingsErrors};
