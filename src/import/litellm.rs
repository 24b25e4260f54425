//! LiteLLM → Tollgate: `model_list` deployments become providers and models (a repeated
//! `model_name` is one multi-target model), `router_settings`/`litellm_settings` become the
//! model's strategy, retries, circuit and fallbacks, Redis settings the shared limit store,
//! and `rpm`/`tpm` per-deployment limits. Consumers are not in a LiteLLM config (its keys live
//! in its database): the output has none, and says so.

use std::path::Path;

use indexmap::IndexMap;
use serde_json::{Map, Value, json};

use super::{ImportError, Imported, Report, read_documents, seconds, unique_name};

/// A deployment of `model_list`.
struct Deployment {
    model_name: String,
    provider: String,
    model: String,
    weight: Option<u64>,
    order: Option<u64>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    pricing: Option<Value>,
}

pub fn import(file: &Path) -> Result<Imported, ImportError> {
    let documents = read_documents(file)?;
    let [doc] = documents.as_slice() else {
        return Err(ImportError::new(
            file,
            "a LiteLLM config is one YAML document",
        ));
    };
    let Some(list) = doc.get("model_list").and_then(Value::as_array) else {
        return Err(ImportError::new(
            file,
            if doc.get("_format_version").is_some() || doc.get("kind").is_some() {
                "this is a Kong configuration: use `tollgate import kong`"
            } else {
                "no model_list: not a LiteLLM proxy config"
            },
        ));
    };
    let mut report = Report::default();
    let mut providers = Map::new();
    let mut provider_ids: IndexMap<String, String> = IndexMap::new();
    let mut deployments = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("model_list[{i}]");
        let Some(model_name) = entry.get("model_name").and_then(Value::as_str) else {
            report.skip(at, "no model_name");
            continue;
        };
        let params = entry.get("litellm_params").cloned().unwrap_or(Value::Null);
        let Some(full) = params.get("model").and_then(Value::as_str) else {
            report.skip(format!("{at}.litellm_params"), "no model");
            continue;
        };
        let Some((kind, model, default_base)) = provider_of(full) else {
            report.skip(
                format!("{at}.litellm_params.model"),
                format!("{full:?}: no Tollgate adapter for this provider"),
            );
            continue;
        };
        let base = params
            .get("api_base")
            .and_then(Value::as_str)
            .map(|b| {
                let b = b.trim_end_matches('/');
                // Ollama's native base: its OpenAI-compatible API is under /v1.
                if default_base.is_some_and(|d| d.ends_with(":11434/v1")) && !b.ends_with("/v1") {
                    format!("{b}/v1")
                } else {
                    b.to_owned()
                }
            })
            .or(default_base.map(str::to_owned));
        let key = params.get("api_key").and_then(Value::as_str).map(|k| {
            let var = k.strip_prefix("os.environ/");
            match var {
                Some(var) => report.secret(
                    &format!("${{{{ env \"{var}\" }}}}"),
                    var,
                    &format!("{at}.litellm_params.api_key"),
                ),
                None => report.secret(
                    k,
                    &format!("{kind} api key"),
                    &format!("{at}.litellm_params.api_key"),
                ),
            }
        });
        let identity = format!(
            "{kind}|{}|{}",
            base.as_deref().unwrap_or(""),
            key.as_deref().unwrap_or("")
        );
        let provider = match provider_ids.get(&identity) {
            Some(name) => name.clone(),
            None => {
                let suggested = if full.starts_with("ollama") {
                    "ollama"
                } else {
                    kind
                };
                let name = unique_name(&providers, suggested);
                let mut p = Map::new();
                p.insert("type".into(), json!(kind));
                if let Some(base) = &base {
                    p.insert("base_url".into(), json!(base));
                }
                if let Some(key) = &key {
                    p.insert("api_key".into(), json!(key));
                }
                if kind == "azure"
                    && let Some(v) = params.get("api_version").and_then(Value::as_str)
                {
                    p.insert("api_version".into(), json!(v));
                }
                providers.insert(name.clone(), Value::Object(p));
                provider_ids.insert(identity, name.clone());
                name
            }
        };
        for field in [
            "temperature",
            "max_tokens",
            "timeout",
            "stream_timeout",
            "max_retries",
        ] {
            if params.get(field).is_some() {
                report.skip(
                    format!("{at}.litellm_params.{field}"),
                    "a per-deployment request setting: not carried",
                );
            }
        }
        let number = |v: &Value, f: &str| v.get(f).and_then(Value::as_u64);
        let info = entry.get("model_info").cloned().unwrap_or(Value::Null);
        let pricing = match (
            info.get("input_cost_per_token").and_then(Value::as_f64),
            info.get("output_cost_per_token").and_then(Value::as_f64),
        ) {
            (Some(i), Some(o)) => Some(json!({"input": per_million(i), "output": per_million(o)})),
            (None, None) => None,
            _ => {
                report.skip(
                    format!("{at}.model_info"),
                    "a price for input or output alone: give both",
                );
                None
            }
        };
        deployments.push(Deployment {
            model_name: model_name.to_owned(),
            provider,
            model: model.to_owned(),
            weight: number(&params, "weight"),
            order: number(&params, "order"),
            rpm: number(&params, "rpm").or_else(|| number(entry, "rpm")),
            tpm: number(&params, "tpm").or_else(|| number(entry, "tpm")),
            pricing,
        });
    }
    let router = doc.get("router_settings").cloned().unwrap_or(Value::Null);
    let settings = doc.get("litellm_settings").cloned().unwrap_or(Value::Null);
    let setting = |field: &str| router.get(field).or_else(|| settings.get(field)).cloned();
    let strategy = match setting("routing_strategy").as_ref().and_then(Value::as_str) {
        None | Some("simple-shuffle") => "weighted",
        Some("least-busy") => "least-busy",
        Some("latency-based-routing") => "lowest-latency",
        Some(other) => {
            report.skip(
                "router_settings.routing_strategy",
                format!("{other:?}: balanced by weight instead"),
            );
            "weighted"
        }
    };
    let mut models = Map::new();
    let mut names: Vec<&str> = Vec::new();
    for d in &deployments {
        if !names.contains(&d.model_name.as_str()) {
            names.push(&d.model_name);
        }
    }
    let mut policies = Map::new();
    for name in &names {
        let group: Vec<&Deployment> = deployments
            .iter()
            .filter(|d| d.model_name == *name)
            .collect();
        let mut model = Map::new();
        if let [one] = group.as_slice() {
            model.insert("provider".into(), json!(one.provider));
            if one.model != *name {
                model.insert("model".into(), json!(one.model));
            }
            if let Some(p) = &one.pricing {
                model.insert("pricing".into(), p.clone());
            }
        } else {
            // `order` is LiteLLM's priority (1 first): the highest weight goes first.
            let by_order = group.iter().any(|d| d.order.is_some());
            let targets: Vec<Value> = group
                .iter()
                .map(|d| {
                    let weight = if by_order {
                        1000u64.saturating_sub(d.order.unwrap_or(100) * 10).max(1)
                    } else {
                        d.weight.unwrap_or(1)
                    };
                    let mut t = json!({"provider": d.provider, "model": d.model, "weight": weight});
                    if let Some(p) = &d.pricing {
                        t["pricing"] = p.clone();
                    }
                    t
                })
                .collect();
            model.insert(
                "strategy".into(),
                json!(if by_order { "priority" } else { strategy }),
            );
            model.insert("targets".into(), json!(targets));
        }
        let mut retry = Map::new();
        if let Some(n) = setting("num_retries").and_then(|v| v.as_u64()) {
            retry.insert("attempts".into(), json!(n + 1));
        }
        if !retry.is_empty() && group.len() > 1 {
            model.insert("retry".into(), Value::Object(retry));
        }
        let mut circuit = Map::new();
        if let Some(n) = setting("allowed_fails").and_then(|v| v.as_u64()) {
            circuit.insert("max_fails".into(), json!(n.max(1)));
        }
        if let Some(s) = setting("cooldown_time").and_then(|v| v.as_f64()) {
            circuit.insert("fail_timeout".into(), json!(seconds(s)));
        }
        if !circuit.is_empty() && group.len() > 1 {
            model.insert("circuit".into(), Value::Object(circuit));
        }
        for d in &group {
            let mut limits = Vec::new();
            if let Some(rpm) = d.rpm {
                limits.push(json!({"requests": rpm, "per": "1m"}));
            }
            if let Some(tpm) = d.tpm {
                limits.push(json!({"tokens": tpm, "per": "1m"}));
            }
            if !limits.is_empty() {
                let pname = unique_name(
                    &policies,
                    &format!("{name}-{}", d.provider).replace([':', '/'], "-"),
                );
                policies.insert(
                    pname,
                    json!({"scope": "provider", "models": [name], "limits": limits}),
                );
                report.note("rpm/tpm became provider-scoped limits for the model (a provider over its limit is skipped like an unavailable target)");
            }
        }
        models.insert((*name).to_owned(), Value::Object(model));
    }
    // Fallbacks: another model to try when one fails. Tollgate fails over between targets of
    // one model, so the fallback's targets join the model's, after its own.
    for list in [
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
    ] {
        let Some(fallbacks) = setting(list) else {
            continue;
        };
        for (i, entry) in fallbacks.as_array().into_iter().flatten().enumerate() {
            for (from, to) in entry.as_object().into_iter().flatten() {
                if list != "fallbacks" {
                    report.skip(
                        format!("router_settings.{list}[{i}]"),
                        "fallbacks for a kind of error only: not carried",
                    );
                    continue;
                }
                fallback(
                    &mut models,
                    from,
                    to,
                    &format!("router_settings.{list}[{i}]"),
                    &mut report,
                );
            }
        }
    }
    let mut config = Map::new();
    let mut rate_limits = Map::new();
    let redis_host = setting("redis_host").and_then(|v| v.as_str().map(str::to_owned));
    if let Some(host) = redis_host {
        let host = host
            .strip_prefix("os.environ/")
            .map_or(host.clone(), |v| format!("${{{v}}}"));
        let port = setting("redis_port")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .map_or("6379".to_owned(), |p| p.to_string());
        let auth = match setting("redis_password").and_then(|v| v.as_str().map(str::to_owned)) {
            Some(p) => {
                let template = p
                    .strip_prefix("os.environ/")
                    .map(|v| format!("${{{{ env \"{v}\" }}}}"));
                format!(
                    ":{}@",
                    report.secret(
                        template.as_deref().unwrap_or(&p),
                        "redis password",
                        "router_settings.redis_password"
                    )
                )
            }
            None => String::new(),
        };
        rate_limits.insert("backend".into(), json!("redis"));
        rate_limits.insert(
            "redis".into(),
            json!({"url": format!("redis://{auth}{host}:{port}")}),
        );
    }
    if !policies.is_empty() {
        rate_limits.insert("policies".into(), Value::Object(policies));
    }
    if !rate_limits.is_empty() {
        config.insert("rate_limits".into(), Value::Object(rate_limits));
    }
    config.insert("providers".into(), Value::Object(providers));
    config.insert("models".into(), Value::Object(models));
    config.insert("routes".into(), json!({"v1": {"path": "/"}}));
    report
        .note("one route at / serves every model, as LiteLLM's proxy does (/v1/chat/completions)");
    config.insert(
        "consumers".into(),
        json!({"litellm-master": {"keys": [report.secret("", "litellm master key", "general_settings.master_key")], "models": "*"}}),
    );
    report.note("LiteLLM's virtual keys live in its database: one consumer stands for the master key; add consumers and keys (the admin API or `consumers:`)");
    if let Some(general) = doc.get("general_settings").and_then(Value::as_object) {
        for key in general.keys().filter(|k| *k != "master_key") {
            report.skip(
                format!("general_settings.{key}"),
                "not carried (database, UI and alerting settings are LiteLLM's own)",
            );
        }
    }
    for key in ["litellm_settings", "router_settings"] {
        for field in doc
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            let known = [
                "routing_strategy",
                "num_retries",
                "allowed_fails",
                "cooldown_time",
                "fallbacks",
                "context_window_fallbacks",
                "content_policy_fallbacks",
                "redis_host",
                "redis_port",
                "redis_password",
            ];
            if !known.contains(&field.as_str()) {
                report.skip(format!("{key}.{field}"), "no equivalent");
            }
        }
    }
    Ok(Imported { config, report })
}

/// USD per token → per million tokens.
fn per_million(per_token: f64) -> f64 {
    (per_token * 1e6 * 1e6).round() / 1e6
}

/// `provider/model` → (Tollgate provider type, upstream model, default base URL).
fn provider_of(full: &str) -> Option<(&'static str, &str, Option<&'static str>)> {
    let (prefix, model) = match full.split_once('/') {
        Some((p, m)) => (p, m),
        None if full.starts_with("claude") => ("anthropic", full),
        None if full.starts_with("gemini") => ("gemini", full),
        None => ("openai", full),
    };
    Some(match prefix {
        "openai" | "text-completion-openai" => ("openai", model, None),
        "anthropic" => ("anthropic", model, None),
        "gemini" => ("gemini", model, None),
        "azure" => ("azure", model, None),
        "mistral" => ("mistral", model, None),
        "groq" => ("groq", model, None),
        "deepseek" => ("deepseek", model, None),
        "openrouter" => ("openrouter", model, None),
        "hosted_vllm" | "vllm" => ("vllm", model, None),
        "ollama" | "ollama_chat" => ("openai", model, Some("http://localhost:11434/v1")),
        _ => return None,
    })
}

/// Appends the targets of `to` (each a model name) to `from`'s, after its own.
fn fallback(
    models: &mut Map<String, Value>,
    from: &str,
    to: &Value,
    at: &str,
    report: &mut Report,
) {
    let Some(target_names) = to.as_array() else {
        return;
    };
    let mut extra = Vec::new();
    for name in target_names.iter().filter_map(Value::as_str) {
        match models.get(name) {
            Some(m) if m.get("targets").is_some() => {
                extra.extend(m["targets"].as_array().into_iter().flatten().cloned());
            }
            Some(m) => extra.push(json!({
                "provider": m["provider"],
                "model": m.get("model").cloned().unwrap_or(json!(name)),
            })),
            None => report.skip(
                at.to_owned(),
                format!("falls back to {name:?}, which is not in model_list"),
            ),
        }
    }
    let Some(model) = models.get_mut(from).and_then(Value::as_object_mut) else {
        report.skip(
            at.to_owned(),
            format!("a fallback for {from:?}, which is not in model_list"),
        );
        return;
    };
    if extra.is_empty() {
        return;
    }
    let mut targets: Vec<Value> = match model.get("targets").and_then(Value::as_array) {
        Some(t) => t.clone(),
        None => {
            let mut own = json!({
                "provider": model.get("provider").cloned().unwrap_or(Value::Null),
                "model": model.get("model").cloned().unwrap_or(json!(from)),
            });
            if let Some(pricing) = model.remove("pricing") {
                own["pricing"] = pricing;
            }
            vec![own]
        }
    };
    // Priority: the model's own targets first, then the fallbacks in order.
    let n = targets.len() + extra.len();
    targets.extend(extra);
    for (i, t) in targets.iter_mut().enumerate() {
        t["weight"] = json!(((n - i) * 10) as u64);
    }
    model.remove("provider");
    model.remove("model");
    model.insert("strategy".into(), json!("priority"));
    model.insert("targets".into(), json!(targets));
    report.note(format!(
        "fallbacks of {from} became lower-priority targets of it"
    ));
}
