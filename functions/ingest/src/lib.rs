//! The ingest function: the [Segment HTTP Tracking API](https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/)
//! in front of the events table, so an existing Segment or RudderStack client (or a Segment
//! webhook) sends here by changing only the host.
//!
//! * [`routes`]: `POST /v1/batch` (`/v1/import`), `/v1/track`, `/v1/identify`, `/v1/group`,
//!   `/v1/page`, `/v1/screen`, `/v1/alias`.
//! * [`auth`]: the write key (HTTP Basic user name or `writeKey` in the body) → tenant.
//! * [`body`]: the 500 KB limit and gzip, bounded after decompression too.
//! * [`handler`]: [`App::handle`], the one function every entry point calls.
//! * [`response`]: the status codes and JSON bodies ([`IngestError`] for whole-request
//!   rejections).
//! * [`sink`]: the narrow store interface ([`EventSink`]), implemented by [`pql_store::Store`].
//! * [`local`]: a small HTTP server around the same handler, for `pql local`.

pub mod auth;
pub mod body;
pub mod handler;
pub mod local;
pub mod response;
pub mod routes;
pub mod sink;

pub use handler::{App, Config, ConfigError};
pub use response::{IngestError, MAX_BATCH_EVENTS, MAX_REQUEST_BYTES};
pub use sink::EventSink;
