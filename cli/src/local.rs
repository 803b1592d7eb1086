//! `pql local`: the whole pipeline on this machine, until Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use pql_engine::Definition;
use pql_local_stack::{LocalStack, Options};
use pql_store::tenants::TenantId;

/// The shipped example definition, used when no `--definition` is given.
pub const EXAMPLE_DEFINITION: &str = include_str!("../../examples/definition.toml");

#[derive(Debug, clap::Args)]
pub struct StackArgs {
    /// Where the ingest endpoint (Segment HTTP Tracking API) listens.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Seeds a tenant with this write key (send it as the Basic-auth user name).
    #[arg(long, default_value = "local_write_key")]
    pub write_key: String,
    /// The tenant's id.
    #[arg(long, default_value = "local")]
    pub tenant: String,
    /// The tenant's definition (TOML, or JSON by extension); default: examples/definition.toml.
    #[arg(long)]
    pub definition: Option<PathBuf>,
    /// Use an already running DynamoDB (e.g. http://127.0.0.1:8000) instead of starting
    /// DynamoDB Local.
    #[arg(long)]
    pub dynamodb_endpoint: Option<String>,
    /// Deliver alerts to this webhook (signed with --webhook-secret).
    #[arg(long)]
    pub webhook: Option<String>,
    /// The webhook signing secret (16+ characters).
    #[arg(long, default_value = "local_webhook_secret_0123456789")]
    pub webhook_secret: String,
    /// Deliver alerts to this Slack incoming webhook.
    #[arg(long)]
    pub slack_webhook: Option<String>,
    /// Write alert e-mails to this directory (one JSON file each), to --email-to.
    #[arg(long)]
    pub email_dir: Option<PathBuf>,
    /// The e-mail recipient with --email-dir.
    #[arg(long, default_value = "sales@example.com")]
    pub email_to: String,
    /// Notification settings (TOML or JSON: routes, suppression; see `pql alerts settings`)
    /// instead of --webhook / --slack-webhook / --email-dir.
    #[arg(long)]
    pub notify_settings: Option<PathBuf>,
    /// Registers this admin key for the tenant (for the admin API and `pql definition push`,
    /// `pql accounts`); stored as its SHA-256 only.
    #[arg(long, default_value = "local_admin_key")]
    pub admin_key: String,
    /// Where the admin API listens (`pql local` default: 127.0.0.1:8788; `pql demo`: not served
    /// unless given).
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
}

/// The definition from `--definition`, or the shipped example.
pub fn load_definition(path: Option<&Path>) -> anyhow::Result<Definition> {
    match path {
        Some(path) => {
            let source = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the definition {}", path.display()))?;
            Ok(Definition::load(&path.display().to_string(), &source)?)
        }
        None => Ok(Definition::from_toml(
            "examples/definition.toml",
            EXAMPLE_DEFINITION,
        )?),
    }
}

/// The repository root (its package-lock.json pins DynamoDB Local): found from the current
/// directory, else from where this binary was built.
pub fn repo_root() -> anyhow::Result<PathBuf> {
    let here = std::env::current_dir()?;
    pql_dynamodb_local::repo_root_from(&here)
        .or_else(|| pql_dynamodb_local::repo_root_from(Path::new(env!("CARGO_MANIFEST_DIR"))))
        .ok_or_else(|| anyhow!("cannot find the pql repository (a directory with package-lock.json) above {}; run pql from the repository, or pass --dynamodb-endpoint", here.display()))
}

/// Options for the stack from the command line's common arguments.
pub fn options(args: &StackArgs) -> anyhow::Result<Options> {
    let tenant = TenantId::parse(&args.tenant).map_err(|e| anyhow!("--tenant: {e}"))?;
    let definition = load_definition(args.definition.as_deref())?;
    let root = match &args.dynamodb_endpoint {
        Some(_) => std::env::current_dir()?,
        None => repo_root()?,
    };
    let mut options = Options::new(tenant, args.write_key.clone(), definition, root);
    options.listen = args.listen;
    options.dynamodb_endpoint = args.dynamodb_endpoint.clone();
    options.notify = notify_options(args)?;
    if args.admin_key.trim().is_empty() {
        return Err(anyhow!("--admin-key is empty"));
    }
    options.admin_key = Some(args.admin_key.clone());
    options.admin_listen = args.admin_listen;
    Ok(options)
}

pub fn run(args: &StackArgs) -> anyhow::Result<()> {
    let mut options = options(args)?;
    options
        .admin_listen
        .get_or_insert(SocketAddr::from(([127, 0, 0, 1], 8788)));
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let definition = options.definition.name.clone();
        let table_prefix = options.table_prefix.clone();
        let notify = options.notify.as_ref().map(|n| n.settings.destinations.len());
        let stack = LocalStack::start(options).await?;
        let url = stack.ingest_url();
        eprintln!("pql local is running (Ctrl-C stops it)");
        eprintln!("  DynamoDB:   {}", stack.endpoint);
        eprintln!("  tenant:     {} with definition \"{definition}\"", stack.tenant);
        eprintln!("  ingest:     {url}/v1/batch (and /v1/track, /v1/identify, /v1/group, /v1/page, /v1/screen, /v1/alias)");
        if let Some(admin) = stack.admin_url() {
            eprintln!("  admin API:  {admin}/v1/definitions, {admin}/v1/accounts (admin key: {})", args.admin_key);
            eprintln!("              pql definition list --api {admin} --admin-key {}", args.admin_key);
        }
        if let Some(n) = notify {
            eprintln!("  notify:     alerts delivered to {n} destination(s); pql alerts list --dynamodb-endpoint {} --table-prefix {table_prefix}", stack.endpoint);
        }
        eprintln!("  try:        curl -u {}: {url}/v1/track -H 'content-type: application/json' -d '{{\"userId\":\"u1\",\"event\":\"Project Created\",\"context\":{{\"groupId\":\"acme\"}}}}'", args.write_key);
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
        eprintln!("stopping...");
        stack.stop().await?;
        Ok(())
    })
}

/// The notify function's settings from --notify-settings, or from --webhook, --slack-webhook
/// and --email-dir (all hot and warm alerts to each); `None` without any.
pub fn notify_options(args: &StackArgs) -> anyhow::Result<Option<pql_local_stack::NotifyOptions>> {
    let settings = if let Some(path) = &args.notify_settings {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        pql_notify::Settings::parse_file(&path.display().to_string(), &text)?
    } else {
        let mut destinations = Vec::new();
        if let Some(url) = &args.slack_webhook {
            destinations.push(serde_json::json!({"id": "slack", "kind": "slack", "url": url}));
        }
        if let Some(url) = &args.webhook {
            destinations.push(serde_json::json!({"id": "webhook", "kind": "webhook", "url": url, "secret": args.webhook_secret}));
        }
        if args.email_dir.is_some() {
            destinations.push(serde_json::json!({"id": "email", "kind": "email", "from": "pql@localhost.localdomain", "to": [args.email_to]}));
        }
        if destinations.is_empty() {
            return Ok(None);
        }
        let ids: Vec<_> = destinations.iter().map(|d| d["id"].clone()).collect();
        let spec =
            serde_json::json!({"destination": destinations, "default": {"destinations": ids}});
        pql_notify::Settings::parse_json("the command line", &spec.to_string())?
    };
    let mut options = pql_local_stack::NotifyOptions::new(settings);
    options.email_dir = args.email_dir.clone();
    Ok(Some(options))
}
