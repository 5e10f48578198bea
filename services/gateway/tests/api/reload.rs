//! Policies edited while traffic flows: applied without a restart, no request failed by the
//! reload, invalid versions refused with the previous one kept, generations reported.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use pretty_assertions::assert_eq;

use crate::helpers::{Gateway, Seen, circuit, rate_limit, upstream};

const OPEN: &str = "{name: browse, match: {pathPrefix: /v1/products/hot}, clientKey: {type: Header, header: X-Client}, algorithm: SlidingWindow, requests: 1000, period: 1m}";
const TIGHT: &str = "{name: browse, match: {pathPrefix: /v1/products/hot}, clientKey: {type: Header, header: X-Client}, algorithm: SlidingWindow, requests: 2, period: 1m}";
/// A rule the steady traffic passes through, in the same policy, never reached.
const STEADY: &str = "    - {name: steady, match: {pathPrefix: /v1/products/cold}, clientKey: {type: Header, header: X-Client}, requests: 1000000, period: 1s}\n";
/// A rule unchanged by the edit whose limit the test does reach: 5 an hour (a token bucket
/// refilling one every 12 minutes, so nothing refills while the test runs).
const KEPT: &str = "    - {name: kept, match: {pathPrefix: /v1/products/kept}, clientKey: {type: Header, header: X-Client}, requests: 5, period: 1h}\n";

/// The policy with `browse` as given and the unchanged `steady` and `kept` rules.
fn with_steady(browse: &str) -> String {
    rate_limit("browse", browse).replacen("---\n", &format!("{STEADY}{KEPT}---\n"), 1)
}

#[tokio::test]
async fn a_policy_file_edited_under_traffic_takes_effect_without_failing_a_request_or_resetting_unchanged_counters()
 {
    let products = upstream("products", Seen::default()).await;
    let gw = Arc::new(
        Gateway::start(
            &format!("products={}", products.url),
            &format!(
                "{}{}",
                with_steady(OPEN),
                // No retries: a request failed by the reload must show as failed.
                circuit("products", "products", "  timeout: 2s")
            ),
            &[],
        )
        .await,
    );
    assert_eq!(gw.generation("browse").await, Some(1));

    // Steady traffic from several clients through the policy being edited (its unchanged
    // `steady` rule) while the file changes.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let (gw, stop, sent, failed) = (gw.clone(), stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                let client = format!("steady-{i}");
                while !stop.load(Ordering::Relaxed) {
                    let status = gw
                        .status("/v1/products/cold", &[("x-client", &client)])
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if status != 200 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Traffic is flowing before the edit (polled, not slept: a loaded machine starts slowly).
    let flowing = |at_least: usize| {
        let sent = sent.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while sent.load(Ordering::Relaxed) < at_least {
                assert!(Instant::now() < deadline, "the steady traffic stalled");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    flowing(20).await;
    // Three of the `kept` rule's five spent before the edit.
    for _ in 0..3 {
        assert_eq!(
            gw.status("/v1/products/kept", &[("x-client", "k")]).await,
            200
        );
    }

    let edited = Instant::now();
    gw.write_policies(&format!(
        "{}{}",
        with_steady(TIGHT),
        circuit("products", "products", "  timeout: 3s")
    ));
    // The new limit holds for a fresh client as soon as it is applied. (How soon is measured,
    // not asserted: a shared machine can stall any process for a while; the deadline only
    // tells "never" from "late".)
    let took = loop {
        if gw.generation("browse").await == Some(2) {
            break edited.elapsed();
        }
        assert!(edited.elapsed() < Duration::from_secs(30), "never applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("the edit was applied after {took:?}");
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                gw.status("/v1/products/hot", &[("x-client", "fresh")])
                    .await,
            );
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429]);
    // The unchanged rule kept its counters through the reload: two left, then refused.
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(gw.status("/v1/products/kept", &[("x-client", "k")]).await);
    }
    assert_eq!(kept, [200, 200, 429], "counters survive an unrelated edit");

    // And it goes on flowing after the reload.
    flowing(sent.load(Ordering::Relaxed) + 20).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed because of the reload"
    );
    let policies = gw.policies().await;
    let circuit_generation = policies["applied"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "CircuitPolicy")
        .unwrap()["generation"]
        .clone();
    assert_eq!(circuit_generation, 2);
    assert!(
        gw.metrics()
            .await
            .contains("gateway_policy_applied_generation")
    );
}

#[tokio::test]
async fn an_invalid_edit_is_refused_and_the_previous_version_stays_in_force() {
    let products = upstream("products", Seen::default()).await;
    let gw = Gateway::start(
        &format!("products={}", products.url),
        &rate_limit("browse", TIGHT),
        &[],
    )
    .await;
    // burst on a sliding window breaks a CEL rule; a broken YAML file is refused as a whole.
    gw.write_policies(&rate_limit(
        "browse",
        &TIGHT.replace("period: 1m}", "period: 1m, burst: 1}"),
    ));
    let deadline = Instant::now() + Duration::from_secs(5);
    let rejected = loop {
        let p = gw.policies().await;
        if p["rejected"].as_array().is_some_and(|r| !r.is_empty()) {
            break p["rejected"][0].clone();
        }
        assert!(Instant::now() < deadline, "never rejected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rejected["name"], "browse");
    assert_eq!(rejected["previous_kept"], true);
    assert!(
        rejected["reason"].as_str().unwrap().contains("burst"),
        "{rejected}"
    );
    assert_eq!(gw.generation("browse").await, Some(1));
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(gw.status("/v1/products/hot", &[("x-client", "c")]).await);
        }
        v
    };
    assert_eq!(statuses, [200, 200, 429], "the previous limit is enforced");

    // A broken file keeps what it held; a second file saved after it shows the poll ran.
    gw.write_policies("this: is: not yaml: [");
    std::fs::write(
        gw.policy_dir.join("later.yaml"),
        rate_limit(
            "later",
            "{name: later, clientKey: {type: ClientIP}, requests: 1000, period: 1m}",
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.generation("later").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the second file was never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw.generation("browse").await,
        Some(1),
        "a broken file keeps what it held"
    );
    std::fs::remove_file(gw.policy_dir.join("later.yaml")).unwrap();

    // Removing the policy lifts the limit.
    gw.write_policies("");
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.generation("browse").await.is_some() {
        assert!(Instant::now() < deadline, "never removed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw.status("/v1/products/hot", &[("x-client", "c")]).await,
        200
    );
}
