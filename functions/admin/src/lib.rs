//! The admin function: what growth teams use to change definitions safely and to look at
//! accounts, over HTTP (`lambda_http`), authenticated with a tenant's **admin key**.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /v1/definitions` | every version (oldest first), the active one, the activation history |
//! | `POST /v1/definitions` `{"definition": {...}}` or `{"source": "...", "format": "toml"}`, with `author`, `message`, optional `"activate": true` | `201` the new version (`200` if the same content exists) |
//! | `GET /v1/definitions/{version}` | the version, its definition and canonical text |
//! | `GET /v1/definitions/{from}/diff/{to}` | a unified diff of the two canonical texts |
//! | `POST /v1/definitions/{version}/activate` `{"author": ...}` | the new and the previous active version |
//! | `POST /v1/definitions/rollback` `{"author": ...}` | activates the version active before |
//! | `GET /v1/accounts?stage=&tier=&limit=&cursor=` | accounts with stage, tier, score (bounded scan: admin only) |
//! | `GET /v1/accounts/{id}` | lifecycle, current decision with reasons, alerts |
//! | `GET /v1/funnel?days=N` | stages reached per day, current stages, median days from sign-up to activation, each milestone and PQL |
//! | `POST /v1/definitions/preview` a draft (`definition` / `source`) or `{"version": ...}` | per stage and tier: accounts before and after, entering, leaving; the accounts that change; accounts the stored state cannot answer for, by reason |
//! | `GET /v1/definitions/reevaluation` | the latest re-evaluation job (started by activate / rollback, run by the sweep): target version, progress (done / total), counters, started / updated / finished |
//! | `POST /v1/definitions/{version}/shadow` `{"author": ...}` (`DELETE` stops) | the qualify function judges that version beside the active one on every account change and stores its decision, never alerting |
//! | `GET /v1/definitions/{version}/shadow/report` | shadow vs active decisions: per stage and tier, accounts that would differ |
//! | `GET /v1/precision` | per definition version: alerts, sales outcomes (`pql alerts feedback`), precision |
//! | `POST /v1/alerts/{account}/{sequence}/feedback` `{"outcome": ..., "reason": ..., "by": ...}` | the sales outcome stored on the alert (`changed: false` if it was already so) |
//! | `GET /v1/alerts?failed=true` | deliveries of the tenant's alerts (parked only with `failed=true`) and feedback |
//!
//! Errors are `{"error": "<code>", "message": "..."}` (invalid definitions add `errors`, each
//! with `field`, `line`, `column`, `location`, `message`, `allowed`); a write key is `403`, a
//! missing or unknown key `401`.
//!
//! * [`auth`]: the admin key (Bearer or Basic) → tenant.
//! * [`handler`]: [`App::handle`], the one function every entry point calls.
//! * [`error`]: [`AdminError`] and the JSON responses.
//! * [`local`]: a small HTTP server around the same handler, for `pql local` and tests.

pub mod alerts;
pub mod auth;
pub mod error;
pub mod handler;
pub mod local;
pub mod preview;
pub mod reevaluation;
pub mod shadow;

pub use error::AdminError;
pub use handler::App;
