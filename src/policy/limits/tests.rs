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

// ---- A reservation made on an upper bound, moved to the estimate when counted -------------

fn each_consumer_tokens_per_minute(n: u64) -> RateLimits {
    limits(vec![(
        "tpm",
        LimitScope::Consumer,
        &[],
        tokens_per_minute(n),
    )])
}

/// What the store holds for `counters` now.
fn stored(l: &RateLimits, counters: &[Counter]) -> Vec<u64> {
    let Store::Local(local) = &l.limiter.store else {
        unreachable!("these tests use the in-process store")
    };
    local.read(counters)
}

#[tokio::test]
async fn a_refiner_moves_the_counters_and_the_reservation_learns_of_it() {
    let l = limits(vec![
        ("tpm", LimitScope::Consumer, &[], tokens_per_minute(10_000)),
        (
            "per-provider",
            LimitScope::Provider,
            &[],
            tokens_per_minute(10_000),
        ),
    ]);
    let c = consumer("u", &[]);
    let mut r = l
        .reserve(l.request_counters(&facts(&c), &estimate(5000, 100)))
        .await
        .unwrap();
    let counters = r.counters.clone();
    let refiner = r.refine_later();
    let provider = l
        .reserve(l.provider_counters(&facts(&c), "p", &estimate(5000, 100)))
        .await
        .unwrap();
    let provider_counters = provider.counters.clone();
    r.absorb(provider);

    refiner.refine(estimate(1200, 100));
    assert_eq!(
        stored(&l, &counters),
        [1300],
        "moved while the request goes on"
    );
    assert_eq!(
        stored(&l, &provider_counters),
        [5100],
        "reserved after: not the refiner's"
    );

    r.refine(&estimate(1200, 100));
    assert_eq!(r.values, [1300, 1300], "the headers tell the estimate");
    assert_eq!(stored(&l, &counters), [1300], "not moved twice");
    assert_eq!(stored(&l, &provider_counters), [1300]);

    r.settle(&estimate(1000, 40));
    assert_eq!(stored(&l, &counters), [1040]);
    assert_eq!(stored(&l, &provider_counters), [1040]);
}

#[tokio::test]
async fn a_reservation_ended_before_or_after_its_count_is_undone_once() {
    let l = each_consumer_tokens_per_minute(10_000);
    let c = consumer("u", &[]);
    let reserve = || async {
        l.reserve(l.request_counters(&facts(&c), &estimate(5000, 100)))
            .await
            .unwrap()
    };

    // Dropped (a failed request) before the count is done: the bound comes back, and the
    // late count moves nothing.
    let mut r = reserve().await;
    let counters = r.counters.clone();
    let refiner = r.refine_later();
    drop(r);
    refiner.refine(estimate(1200, 100));
    assert_eq!(stored(&l, &counters), [0]);

    // Dropped after: the estimate comes back.
    let mut r = reserve().await;
    let refiner = r.refine_later();
    refiner.refine(estimate(1200, 100));
    assert_eq!(stored(&l, &counters), [1300]);
    drop(r);
    assert_eq!(stored(&l, &counters), [0]);

    // Settled before the count is done (an upstream faster than the count): the real usage.
    let mut r = reserve().await;
    let refiner = r.refine_later();
    r.settle(&estimate(900, 30));
    refiner.refine(estimate(1200, 100));
    assert_eq!(stored(&l, &counters), [930]);
}

#[tokio::test]
async fn a_budget_admits_on_the_bound_without_waiting_for_the_count() {
    use crate::policy::budget::{Budget, Prompt};
    let l = each_consumer_tokens_per_minute(10_000);
    let c = consumer("u", &[]);
    let counters = l.request_counters(&facts(&c), &estimate(0, 0));
    let (count_done, counted) = tokio::sync::oneshot::channel::<u64>();
    let prompt = Prompt {
        count: async move { counted.await.unwrap_or(0) },
        at_most: Some(5000),
        completion: Some(100),
    };
    let mut budget = tokio::time::timeout(
        Duration::from_secs(5),
        Budget::reserve(&l, &facts(&c), std::iter::empty(), prompt),
    )
    .await
    .expect("admitted before the count is done")
    .unwrap();
    assert_eq!(stored(&l, &counters), [5100], "the bound is held");

    count_done.send(1200).unwrap();
    for _ in 0..100 {
        if stored(&l, &counters) == [1300] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stored(&l, &counters), [1300], "moved as soon as counted");
    budget.refine().await;
    assert_eq!(budget.prompt_estimate(), Some(1200));
    assert_eq!(stored(&l, &counters), [1300]);
    let usage = crate::providers::Usage {
        prompt_tokens: 1000,
        completion_tokens: 20,
        total_tokens: 1020,
        ..Default::default()
    };
    budget.settle_whole(Some(&usage), None);
    assert_eq!(stored(&l, &counters), [1020]);
}

#[tokio::test]
async fn a_bound_that_does_not_fit_is_counted_first() {
    use crate::policy::budget::{Budget, Prompt};
    let l = each_consumer_tokens_per_minute(2000);
    let c = consumer("u", &[]);
    let counters = l.request_counters(&facts(&c), &estimate(0, 0));
    let prompt = |count: u64| Prompt {
        count: async move { count },
        at_most: Some(5000),
        completion: Some(100),
    };
    let budget = Budget::reserve(&l, &facts(&c), std::iter::empty(), prompt(1200))
        .await
        .expect("the estimate fits where the bound did not");
    assert_eq!(stored(&l, &counters), [1300]);
    assert_eq!(budget.prompt_estimate(), Some(1200));
    let refused = Budget::reserve(&l, &facts(&c), std::iter::empty(), prompt(1200)).await;
    assert!(matches!(refused, Err(GatewayError::RateLimited { .. })));
    assert_eq!(stored(&l, &counters), [1300], "the refusals took nothing");
}
