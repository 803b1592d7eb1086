//! For tests (feature `testing`): a store on fresh tables in DynamoDB Local.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use pql_dynamodb_local::{repo_root_from, DynamoDbLocal};

use crate::{local_client, template, Store, Tables};

/// A store on fresh tables (a unique prefix, created from the SAM template) in DynamoDB Local:
/// the one `scripts/test.sh` started (`PQL_DYNAMODB_ENDPOINT`), else a new one that lives as
/// long as the returned guard.
pub async fn fresh_store() -> (Store, Option<DynamoDbLocal>) {
    static SEQUENCE: AtomicUsize = AtomicUsize::new(0);
    let (endpoint, db) = match std::env::var("PQL_DYNAMODB_ENDPOINT") {
        Ok(endpoint) => (endpoint, None),
        Err(_) => {
            let root =
                repo_root_from(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("repository root");
            let db = DynamoDbLocal::start(&root).unwrap_or_else(|e| panic!("{e}"));
            (db.endpoint(), Some(db))
        }
    };
    let client = local_client(&endpoint);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("t{nanos}-{}-", SEQUENCE.fetch_add(1, Ordering::Relaxed));
    template::create_tables(&client, template::SAM_TEMPLATE, &prefix)
        .await
        .expect("tables from the template");
    (Store::new(client, Tables::with_prefix(&prefix)), db)
}
