use std::sync::Arc;

use super::*;
use crate::config::{LimitConfig, PolicyConfig};
use crate::policy::model_set::ModelSet;

fn consumer(name: &str, groups: &[&str]) -> Consumer {
    Consumer {
        name: name.into(),
        custom_id: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        models: std::sync::Arc::new(ModelSet::All),
        user_header: None,
        acts_for: None,
        signed_user: None,
        budgets: None,
        from_store: false,
    }
}

fn limits(policies: Vec<(&str, LimitScope, &[&str], LimitConfig)>) -> RateLimits {
    let mut config = RateLimitsConfig::default();
    for (name, scope, groups, limit) in policies {
        config.policies.insert(
            name.into(),
            PolicyConfig {
                scope,
                consumers: vec![],
                groups: groups.iter().map(|g| g.to_string()).collect(),
                models: vec![],
                routes: vec![],
                limits: vec![limit],
            },
        );
    }
    RateLimits::compile(&config, Arc::new(Limiter::new(&config).unwrap()))
}

fn tokens_per_minute(n: u64) -> LimitConfig {
    LimitConfig {
        tokens: Some(n),
        prompt_tokens: None,
        completion_tokens: None,
        requests: None,
        cost_usd: None,
        per: Duration::from_secs(60),
    }
}

fn requests_per_minute(n: u64) -> LimitConfig {
    LimitConfig {
        requests: Some(n),
        ..tokens_per_minute(0)
    }
    .with_tokens(None)
}

impl LimitConfig {
    fn with_tokens(mut self, t: Option<u64>) -> Self {
        self.tokens = t;
        self
    }
}

fn facts<'a>(c: &'a Consumer) -> RequestFacts<'a> {
    RequestFacts {
        consumer: c,
        route: "ai",
        model: "m",
        key_budgets: None,
    }
}

fn estimate(prompt: u64, completion: u64) -> Amounts {
    Amounts {
        requests: 1,
        prompt,
        completion,
        cost_micro_usd: 0,
    }
}

#[tokio::test]
async fn all_counters_or_none_and_refused_requests_take_nothing() {
    let l = limits(vec![
        ("tpm", LimitScope::Consumer, &[], tokens_per_minute(1000)),
        ("rpm", LimitScope::Consumer, &[], requests_per_minute(2)),
    ]);
    let c = consumer("u", &[]);
    let first = l
        .reserve(l.request_counters(&facts(&c), &estimate(100, 400)))
        .await
        .unwrap();
    assert_eq!(first.values, [500, 1]);
    // 600 more tokens would not fit: nothing is taken, not even the request count.
    let err = l
        .reserve(l.request_counters(&facts(&c), &estimate(100, 500)))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 429);
    let second = l
        .reserve(l.request_counters(&facts(&c), &estimate(100, 400)))
        .await
        .unwrap();
    assert_eq!(second.values, [1000, 2]);
    let headers = second.headers();
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "x-ai-ratelimit-remaining-minute" && v == "0"),
        "{headers:?}"
    );
    drop((first, second));
}

#[tokio::test]
async fn settling_charges_the_real_usage_and_dropping_refunds() {
    let l = limits(vec![(
        "tpm",
        LimitScope::Consumer,
        &[],
        tokens_per_minute(1000),
    )]);
    let c = consumer("u", &[]);
    let r = l
        .reserve(l.request_counters(&facts(&c), &estimate(100, 900)))
        .await
        .unwrap();
    r.settle(&estimate(100, 50));
    tokio::task::yield_now().await;
    let r = l
        .reserve(l.request_counters(&facts(&c), &estimate(0, 850)))
        .await
        .unwrap();
    assert_eq!(r.values, [1000], "150 really used + 850 reserved");
    drop(r); // refund
    tokio::task::yield_now().await;
    let r = l
        .reserve(l.request_counters(&facts(&c), &estimate(0, 850)))
        .await
        .unwrap();
    assert_eq!(r.values, [1000]);
    r.settle(&estimate(0, 850));
}

#[tokio::test]
async fn group_scope_shares_a_counter_consumer_scope_does_not() {
    let shared = limits(vec![(
        "team",
        LimitScope::Group,
        &["devs"],
        requests_per_minute(1),
    )]);
    let (a, b, outsider) = (
        consumer("a", &["devs"]),
        consumer("b", &["devs"]),
        consumer("c", &["ops"]),
    );
    let _held = shared
        .reserve(shared.request_counters(&facts(&a), &estimate(1, 1)))
        .await
        .unwrap();
    assert!(
        shared
            .reserve(shared.request_counters(&facts(&b), &estimate(1, 1)))
            .await
            .is_err(),
        "the group is full"
    );
    assert!(
        shared
            .request_counters(&facts(&outsider), &estimate(1, 1))
            .is_empty(),
        "not a member: no policy"
    );

    let each = limits(vec![(
        "member",
        LimitScope::Consumer,
        &["devs"],
        requests_per_minute(1),
    )]);
    let _held = each
        .reserve(each.request_counters(&facts(&a), &estimate(1, 1)))
        .await
        .unwrap();
    assert!(
        each.reserve(each.request_counters(&facts(&b), &estimate(1, 1)))
            .await
            .is_ok(),
        "each member has their own"
    );
}
