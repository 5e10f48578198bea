//! The outbound client against a real flaky HTTP server, with the CircuitPolicy in a file that
//! the test edits while calls go on: retries, the breaker, the bulkhead and the deadline follow
//! each saved version without a restart.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::any};
use clap::Parser;
use prometheus::Registry;
use tienda_kit::{
    Needs, Platform,
    outbound::{CallError, Outbound, Target},
    policy::{Policies, PolicyConfig, PolicySource},
    shutdown::Shutdown,
    trace_context::TraceContext,
};
use tokio::sync::Notify;

/// How the server answers.
#[derive(Debug, Default)]
struct Flaky {
    /// Requests received.
    hits: AtomicUsize,
    /// Answer 503 to this many requests, then 200.
    failures_left: AtomicU32,
    /// Hold each answer this long (ms).
    delay_ms: AtomicU32,
    /// Woken when a request arrives.
    arrived: Notify,
    /// The headers and body of each request.
    seen: Mutex<Vec<(HeaderMap, String)>>,
}

impl Flaky {
    fn fail_next(&self, n: u32) {
        self.failures_left.store(n, Ordering::SeqCst);
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn answer(State(flaky): State<Arc<Flaky>>, headers: HeaderMap, body: String) -> StatusCode {
    flaky.hits.fetch_add(1, Ordering::SeqCst);
    flaky.seen.lock().unwrap().push((headers, body));
    flaky.arrived.notify_one();
    let delay = flaky.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay.into())).await;
    }
    let failing = flaky
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// A service's flags, as far as policies go.
#[derive(Debug, Parser)]
struct Flags {
    #[command(flatten)]
    policy: PolicyConfig,
}

/// Answers headers at once and the body never (within a test's patience).
async fn trickle() -> axum::response::Response {
    let late = futures::stream::once(async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"late"))
    });
    axum::response::Response::new(axum::body::Body::from_stream(late))
}

struct Harness {
    flaky: Arc<Flaky>,
    url: String,
    outbound: Outbound,
    policies: Arc<Policies>,
    registry: Registry,
    file: PathBuf,
    _dir: tempdir::Dir,
    shutdown: Shutdown,
}

/// A scratch directory removed on drop.
mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let path =
                std::env::temp_dir().join(format!("tienda-outbound-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Harness {
    async fn start() -> Self {
        tienda_kit::install_crypto_provider();
        let flaky = Arc::new(Flaky::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/charge", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/charge", any(answer))
            .route("/trickle", any(trickle))
            .route(
                "/redirect",
                any(|| async { axum::response::Redirect::temporary("/charge") }),
            )
            .with_state(flaky.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let dir = tempdir::Dir::new();
        let file = dir.0.join("policies.yaml");
        std::fs::write(&file, "").unwrap();
        // The way a service gets it: its platform, and the policy flags of its config.
        let platform = Platform::start(
            "orders",
            tienda_kit::testing::config(None),
            Needs::default(),
        )
        .await
        .unwrap();
        let config = Flags::parse_from([
            "orders".to_owned(),
            format!("--policy-path={}", file.display()),
        ])
        .policy;
        assert_eq!(config.source(), PolicySource::File);
        let outbound = Outbound::start(&platform, &config).await.unwrap();
        Self {
            flaky,
            url,
            policies: outbound.policies().clone(),
            outbound,
            registry: platform.metrics.registry.clone(),
            file,
            _dir: dir,
            shutdown: platform.shutdown.clone(),
        }
    }

    /// Saves a CircuitPolicy `name` on External `flaky` with `spec` (YAML flow lines), and
    /// waits until the watcher has put that version in force.
    async fn save_policy(&self, spec: &str) {
        let before = self.generation();
        let yaml = format!(
            "apiVersion: tienda.dev/v1alpha1\nkind: CircuitPolicy\nmetadata: {{name: flaky}}\nspec:\n  targetRef: {{kind: External, name: flaky}}\n{spec}\n"
        );
        std::fs::write(&self.file, yaml).unwrap();
        // The file source polls every 250 ms.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.generation() == before {
            let rejected = self.policies.current().rejected.clone();
            assert!(rejected.is_empty(), "policy refused: {rejected:?}");
            assert!(Instant::now() < deadline, "the edit was not applied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn generation(&self) -> i64 {
        self.policies
            .current()
            .applied
            .iter()
            .find(|a| a.name == "flaky")
            .map_or(0, |a| a.generation)
    }

    async fn get(&self) -> Result<reqwest::Response, CallError> {
        let request = self.outbound.client().get(&self.url).build().unwrap();
        self.outbound.call(Target::External("flaky"), request).await
    }

    fn metric(&self, outcome: &str) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == "outbound_requests_total")
            .flat_map(|f| f.get_metric().to_vec())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "outcome" && l.value() == outcome)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

const RETRY: &str =
    "  retry: {attempts: 3, backoff: {base: 1ms, max: 2ms}, retryOn: [ServerError]}";
const BREAKER: &str = "  circuitBreaker: {consecutiveFailures: 2, openFor: 1m}";

#[tokio::test]
async fn a_policy_edited_on_disk_changes_how_calls_to_a_flaky_server_are_made() {
    let h = Harness::start().await;

    // No policy: one attempt; the 503 is the caller's to read.
    h.flaky.fail_next(2);
    let answer = h.get().await.expect("an answer");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.flaky.hits(), 1);

    // Retries saved: two failures are retried away.
    h.save_policy(RETRY).await;
    h.flaky.fail_next(2);
    let answer = h.get().await.expect("an answer");
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(h.flaky.hits(), 1 + 3, "three attempts");

    // Retries replaced by a breaker: two failures open it; the third call is refused unsent.
    h.save_policy(BREAKER).await;
    h.flaky.fail_next(100);
    for _ in 0..2 {
        assert_eq!(
            h.get().await.unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let hits = h.flaky.hits();
    let refused = h.get().await.expect_err("the circuit is open");
    assert!(
        matches!(refused, CallError::CircuitOpen { .. }),
        "{refused}"
    );
    assert!(refused.not_sent());
    assert!(refused.retry_after().unwrap() > Duration::from_secs(50));
    assert_eq!(h.flaky.hits(), hits, "nothing reached the server");
    assert_eq!(h.metric("circuit_open"), 1);

    // The breaker's settings edited: a new breaker, closed, and calls flow again.
    h.flaky.fail_next(0);
    h.save_policy("  circuitBreaker: {consecutiveFailures: 3, openFor: 1m}")
        .await;
    assert_eq!(h.get().await.unwrap().status(), StatusCode::OK);
    assert_eq!(h.flaky.hits(), hits + 1);
}

#[tokio::test]
async fn only_calls_safe_to_repeat_are_retried_and_each_repeat_carries_the_same_key_and_body() {
    let h = Harness::start().await;
    h.save_policy(RETRY).await;

    h.flaky.fail_next(2);
    let post = h
        .outbound
        .client()
        .post(&h.url)
        .body("amount=100")
        .build()
        .unwrap();
    let answer = h
        .outbound
        .call(Target::External("flaky"), post)
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.flaky.hits(), 1, "a POST without a key is sent once");

    h.flaky.fail_next(2);
    let keyed = h
        .outbound
        .client()
        .post(&h.url)
        .header("idempotency-key", "charge-1")
        .body("amount=100")
        .build()
        .unwrap();
    let answer = h
        .outbound
        .call(Target::External("flaky"), keyed)
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let seen = h.flaky.seen.lock().unwrap();
    let repeats: Vec<(String, String)> = seen[1..]
        .iter()
        .map(|(headers, body)| {
            (
                headers["idempotency-key"].to_str().unwrap().to_owned(),
                body.clone(),
            )
        })
        .collect();
    assert_eq!(
        repeats,
        vec![("charge-1".to_owned(), "amount=100".to_owned()); 3]
    );
}

#[tokio::test]
async fn a_policy_on_another_target_does_not_apply() {
    let h = Harness::start().await;
    h.save_policy(RETRY).await;
    h.flaky.fail_next(2);
    let request = h.outbound.client().get(&h.url).build().unwrap();
    let answer = h
        .outbound
        .call(Target::Service("payments"), request)
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        h.flaky.hits(),
        1,
        "no policy for service payments: one attempt"
    );
}

#[tokio::test]
async fn the_deadline_bounds_the_whole_call_retries_included() {
    let h = Harness::start().await;
    h.save_policy(&format!("  timeout: 300ms\n{RETRY}")).await;
    h.flaky.delay_ms.store(30_000, Ordering::SeqCst);
    let late = h.get().await.expect_err("no answer within the deadline");
    assert!(matches!(late, CallError::Timeout { .. }), "{late}");
    assert_eq!(h.flaky.hits(), 1, "a timeout is not in retryOn");
    assert_eq!(h.metric("timeout"), 1);
}

#[tokio::test]
async fn a_full_bulkhead_refuses_without_sending() {
    let h = Harness::start().await;
    h.save_policy("  bulkhead: {maxConcurrent: 1, maxQueued: 0}")
        .await;
    h.flaky.delay_ms.store(30_000, Ordering::SeqCst);
    let outbound = h.outbound.clone();
    let url = h.url.clone();
    let first = tokio::spawn(async move {
        let request = outbound.client().get(&url).build().unwrap();
        outbound.call(Target::External("flaky"), request).await
    });
    h.flaky.arrived.notified().await;
    let refused = h.get().await.expect_err("the only slot is taken");
    assert!(
        matches!(refused, CallError::BulkheadFull { .. }),
        "{refused}"
    );
    assert_eq!(h.flaky.hits(), 1);
    first.abort();
}

#[tokio::test]
async fn the_callers_trace_continues_in_the_call() {
    let h = Harness::start().await;
    let context = TraceContext::new_root();
    context.scope(async { h.get().await.unwrap() }).await;
    let seen = h.flaky.seen.lock().unwrap();
    let header = seen[0].0["traceparent"].to_str().unwrap().to_owned();
    let sent = TraceContext::parse(&header).expect("a valid traceparent");
    assert_eq!(sent.trace_id(), context.trace_id(), "same trace");
    assert_ne!(header, context.to_header(), "a child span");
}

#[tokio::test]
async fn a_breaker_that_opens_between_attempts_returns_what_was_sent_not_circuit_open() {
    let h = Harness::start().await;
    h.save_policy(&format!(
        "{RETRY}\n  circuitBreaker: {{consecutiveFailures: 1, openFor: 1m}}"
    ))
    .await;
    h.flaky.fail_next(100);
    let answer = h
        .get()
        .await
        .expect("the first attempt's answer, not a refusal");
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        h.flaky.hits(),
        1,
        "the retry was refused by the open breaker"
    );
    let refused = h.get().await.expect_err("now nothing is sent");
    assert!(refused.not_sent(), "{refused}");
}

#[tokio::test]
async fn the_deadline_also_bounds_reading_the_body() {
    let h = Harness::start().await;
    h.save_policy("  timeout: 300ms").await;
    let url = h.url.replace("/charge", "/trickle");
    let request = h.outbound.client().get(url).build().unwrap();
    let answer = h
        .outbound
        .call(Target::External("flaky"), request)
        .await
        .expect("headers arrive at once");
    let body = tokio::time::timeout(Duration::from_secs(30), answer.bytes())
        .await
        .expect("the body read ends with the call's deadline, not the test's patience");
    assert!(body.is_err(), "cut off: {body:?}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let h = Harness::start().await;
    let url = h.url.replace("/charge", "/redirect");
    let request = h.outbound.client().get(url).build().unwrap();
    let answer = h
        .outbound
        .call(Target::External("flaky"), request)
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(h.flaky.hits(), 0, "the redirect's target was not called");
}
