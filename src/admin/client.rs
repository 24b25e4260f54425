//! The command line over the admin API (`tollgate keys ...`, `tollgate consumers ...`,
//! `tollgate export`): the same endpoints, checks and audit log as any other admin client.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

/// Where the admin API is and how to sign in.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// The admin listener's base URL.
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_URL",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    pub admin_url: String,
    /// An admin token (best from the environment: it stays out of shell history).
    #[arg(
        long,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for a consumer; prints the secret (shown this once).
    Create {
        consumer: String,
        #[arg(long)]
        name: Option<String>,
        /// Expires after this long (`30d`, `12h`).
        #[arg(long)]
        expires_in: Option<String>,
        /// Narrow the consumer's models for this key (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Narrow the consumer's groups for this key.
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
        /// A budget, e.g. `tokens=1000000/30d` or `cost_usd=5/30d` (repeatable).
        #[arg(long = "budget")]
        budgets: Vec<String>,
        /// Makes a retried create return the first answer instead of a second key.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// A consumer's keys (never their secrets).
    List { consumer: String },
    /// A new secret under the same id; the old one works for `--grace`.
    Rotate {
        id: String,
        #[arg(long)]
        grace: Option<String>,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Revoke a key at once.
    Revoke { id: String },
    /// What a key and its consumer used of their budgets.
    Spend { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ConsumersCommand {
    /// Create a consumer in the store.
    Create {
        name: String,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        #[arg(long, value_delimiter = ',')]
        emails: Vec<String>,
        /// A budget, e.g. `tokens=1000000/30d` (repeatable).
        #[arg(long = "budget")]
        budgets: Vec<String>,
    },
    /// List the store's consumers.
    List,
    /// Show one consumer.
    Get { name: String },
    /// Replace some of a consumer's settings with a JSON object, e.g. '{"groups": ["dev"]}'.
    Update { name: String, changes: String },
    /// Delete a consumer and its keys.
    Delete { name: String },
}

pub async fn keys(target: &AdminTarget, command: KeysCommand) -> ExitCode {
    let api = Api::new(target);
    let result = match command {
        KeysCommand::Create {
            consumer,
            name,
            expires_in,
            models,
            groups,
            budgets,
            idempotency_key,
        } => match parse_budgets(&budgets) {
            Ok(budgets) => {
                let mut body = Map::new();
                insert_some(&mut body, "name", name.map(Value::from));
                insert_some(&mut body, "expires_in", expires_in.map(Value::from));
                insert_some(&mut body, "models", models.map(|m| json!(m)));
                insert_some(&mut body, "groups", groups.map(|g| json!(g)));
                body.insert("budgets".into(), budgets);
                api.send(
                    reqwest::Method::POST,
                    &format!("/admin/v1/consumers/{}/keys", seg(&consumer)),
                    Some(Value::Object(body)),
                    idempotency_key.as_deref(),
                )
                .await
            }
            Err(e) => Err(e),
        },
        KeysCommand::List { consumer } => {
            api.all(&format!("/admin/v1/consumers/{}/keys", seg(&consumer)))
                .await
        }
        KeysCommand::Rotate {
            id,
            grace,
            idempotency_key,
        } => {
            let body = grace.map_or_else(|| json!({}), |g| json!({"grace": g}));
            api.send(
                reqwest::Method::POST,
                &format!("/admin/v1/keys/{}/rotate", seg(&id)),
                Some(body),
                idempotency_key.as_deref(),
            )
            .await
        }
        KeysCommand::Revoke { id } => {
            api.send(
                reqwest::Method::POST,
                &format!("/admin/v1/keys/{}/revoke", seg(&id)),
                None,
                None,
            )
            .await
        }
        KeysCommand::Spend { id } => {
            api.send(
                reqwest::Method::GET,
                &format!("/admin/v1/keys/{}/spend", seg(&id)),
                None,
                None,
            )
            .await
        }
    };
    print_result(result)
}

pub async fn consumers(target: &AdminTarget, command: ConsumersCommand) -> ExitCode {
    let api = Api::new(target);
    let result = match command {
        ConsumersCommand::Create {
            name,
            groups,
            models,
            emails,
            budgets,
        } => match parse_budgets(&budgets) {
            Ok(budgets) => {
                let mut body = Map::new();
                body.insert("name".into(), json!(name));
                body.insert("groups".into(), json!(groups));
                insert_some(&mut body, "models", models.map(|m| json!(m)));
                body.insert("emails".into(), json!(emails));
                body.insert("budgets".into(), budgets);
                api.send(
                    reqwest::Method::POST,
                    "/admin/v1/consumers",
                    Some(Value::Object(body)),
                    None,
                )
                .await
            }
            Err(e) => Err(e),
        },
        ConsumersCommand::List => api.all("/admin/v1/consumers").await,
        ConsumersCommand::Get { name } => {
            api.send(
                reqwest::Method::GET,
                &format!("/admin/v1/consumers/{}", seg(&name)),
                None,
                None,
            )
            .await
        }
        ConsumersCommand::Update { name, changes } => match serde_json::from_str(&changes) {
            Ok(changes) => {
                api.send(
                    reqwest::Method::PATCH,
                    &format!("/admin/v1/consumers/{}", seg(&name)),
                    Some(changes),
                    None,
                )
                .await
            }
            Err(e) => Err(format!("the changes are not JSON: {e}")),
        },
        ConsumersCommand::Delete { name } => {
            api.send(
                reqwest::Method::DELETE,
                &format!("/admin/v1/consumers/{}", seg(&name)),
                None,
                None,
            )
            .await
        }
    };
    print_result(result)
}

/// The store's consumers as a `consumers:` section of a config file, in YAML; what a file
/// cannot hold is listed on standard error.
pub async fn export(target: &AdminTarget) -> ExitCode {
    let api = Api::new(target);
    match api
        .send(reqwest::Method::GET, "/admin/v1/export", None, None)
        .await
    {
        Ok(exported) => {
            for line in exported["not_carried"].as_array().into_iter().flatten() {
                eprintln!("not carried: {}", line.as_str().unwrap_or_default());
            }
            match serde_yaml_ng::to_string(&json!({"consumers": exported["consumers"]})) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("tollgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Api<'a> {
    target: &'a AdminTarget,
    client: reqwest::Client,
}

impl<'a> Api<'a> {
    fn new(target: &'a AdminTarget) -> Self {
        Self {
            target,
            client: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.target.admin_url.trim_end_matches('/'));
        let mut request = self
            .client
            .request(method, &url)
            .timeout(std::time::Duration::from_secs(30));
        if let Some(token) = &self.target.admin_token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("cannot reach the admin API at {url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let value: Value = if text.is_empty() {
            json!({"status": status.as_u16()})
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["error"]["message"].as_str().unwrap_or("(no message)");
            let code = value["error"]["code"].as_str().unwrap_or("");
            Err(format!("{status} {code}: {message}"))
        }
    }

    /// Every page of a listing.
    async fn all(&self, path: &str) -> Result<Value, String> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let page = self
                .send(
                    reqwest::Method::GET,
                    &format!("{path}?limit=1000&after={}", seg(&after)),
                    None,
                    None,
                )
                .await?;
            all.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => after = next.to_owned(),
                None => return Ok(Value::Array(all)),
            }
        }
    }
}

fn print_result(result: Result<Value, String>) -> ExitCode {
    match result {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn insert_some(body: &mut Map<String, Value>, field: &str, value: Option<Value>) {
    if let Some(v) = value {
        body.insert(field.into(), v);
    }
}

/// `tokens=1000000/30d` → `{"tokens": 1000000, "per": "30d"}`.
fn parse_budgets(budgets: &[String]) -> Result<Value, String> {
    budgets
        .iter()
        .map(|b| {
            let (amount, per) = b
                .split_once('/')
                .ok_or_else(|| format!("budget {b:?}: expected METRIC=AMOUNT/WINDOW"))?;
            let (metric, amount) = amount
                .split_once('=')
                .ok_or_else(|| format!("budget {b:?}: expected METRIC=AMOUNT/WINDOW"))?;
            let amount: f64 = amount
                .parse()
                .map_err(|_| format!("budget {b:?}: {amount:?} is not a number"))?;
            let amount = if metric == "cost_usd" {
                json!(amount)
            } else {
                json!(amount as u64)
            };
            Ok(json!({metric: amount, "per": per}))
        })
        .collect::<Result<Vec<_>, String>>()
        .map(Value::Array)
}

/// A path segment, percent-encoded.
fn seg(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
