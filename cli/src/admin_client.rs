//! The admin API from the command line: `--api URL` and `--admin-key KEY` (or the environment
//! variables `PQL_API` and `PQL_ADMIN_KEY`), one blocking call per request.

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// Where the admin API is and the key to use.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The admin API's base URL (e.g. `http://127.0.0.1:8788` for `pql local`).
    #[arg(long, env = "PQL_API", value_name = "URL")]
    pub api: String,
    /// The tenant's admin key (not a write key).
    #[arg(
        long,
        env = "PQL_ADMIN_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub admin_key: String,
    /// Print the API's JSON answer instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// An error answer of the API, kept whole so callers can show its details.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub body: Value,
}

pub struct AdminClient {
    base: String,
    key: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl AdminClient {
    pub fn new(args: &ApiArgs) -> anyhow::Result<AdminClient> {
        let base = args.api.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "--api `{}` is not a URL (allowed: http://HOST[:PORT] or https://HOST[/STAGE])",
                args.api
            );
        }
        if args.admin_key.trim().is_empty() {
            bail!("--admin-key (or PQL_ADMIN_KEY) is empty");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(AdminClient {
            base,
            key: args.admin_key.trim().to_owned(),
            client,
            runtime,
        })
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None)
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::DELETE, path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let (status, text) = self.runtime.block_on(async {
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach the admin API at {url}"))?;
            let status = response.status().as_u16();
            let text = response
                .text()
                .await
                .with_context(|| format!("{method} {url}: the answer could not be read"))?;
            Ok::<_, anyhow::Error>((status, text))
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            anyhow!(
                "{method} {url} answered {status} with something that is not JSON: {}",
                text.chars().take(200).collect::<String>()
            )
        })?;
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let code = value["error"].as_str().unwrap_or("error").to_owned();
        let message = value["message"]
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        Err(ApiError {
            status,
            message: format!("{message} ({status} {code})"),
            code,
            body: value,
        }
        .into())
    }
}

/// Percent-encodes one path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_segments() {
        assert_eq!(super::encode("acme inc/1"), "acme%20inc%2F1");
        assert_eq!(super::encode("a-b_c.d~"), "a-b_c.d~");
    }
}
