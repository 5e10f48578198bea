//! RateLimitPolicy enforcement: each rule of an applied policy becomes a [`Limit`] — a keyed
//! token bucket (governor's GCRA) or a [`SlidingWindow`] — and every request is counted by
//! each rule it matches. A request is refused (429) if any enforcing rule refuses it; shadow
//! rules count and report but never refuse.
//!
//! Limits are stated for the whole shop and each replica enforces its share
//! (`requests / replicas`, at least 1), so the total stays right without a shared store.

use std::{
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::{HeaderMap, HeaderValue, Method};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use tienda_crds::rate_limit_policy::{
    Algorithm, ClientKeyType, HttpMethod, RateLimitRule, RequestMatch,
};

use super::sliding_window::{SlidingWindow, Verdict};

type TokenBuckets =
    RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock, StateInformationMiddleware>;

/// Clients are counted in this many slots per rule, by a keyed hash of their key: memory stays
/// bounded (about 16 MiB per rule at worst) whatever keys clients invent, and two clients share
/// a slot only by a 1-in-262,144 chance.
const SLOTS: u64 = 1 << 18;

/// The state of one rule: per-client counters.
enum Counter {
    TokenBucket(TokenBuckets),
    SlidingWindow(SlidingWindow),
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TokenBucket(_) => f.write_str("TokenBucket"),
            Self::SlidingWindow(w) => write!(f, "SlidingWindow({} keys)", w.len()),
        }
    }
}

/// One compiled rule of a RateLimitPolicy.
#[derive(Debug)]
pub struct Limit {
    /// The policy's name.
    pub policy: String,
    /// The rule as written (compared on reload: an unchanged rule keeps its counters).
    pub rule: RateLimitRule,
    /// The gateway replicas the limit is shared by.
    pub replicas: u32,
    /// Seeds the hash of client keys (per process, so slots cannot be aimed at).
    hasher: std::hash::RandomState,
    /// Components whose routes it covers; `None`: every route (a Shop target).
    pub services: Option<Vec<String>>,
    counter: Counter,
}

/// What a request brings that rules key on.
#[derive(Debug)]
pub struct RequestFacts<'a> {
    /// The component the path routes to.
    pub service: &'a str,
    /// Method.
    pub method: &'a Method,
    /// Path.
    pub path: &'a str,
    /// Headers as the client sent them.
    pub headers: &'a HeaderMap,
    /// The client's address (after trusted proxies).
    pub client_ip: &'a str,
    /// The verified user, if any.
    pub user: Option<&'a str>,
}

/// One rule's answer for a request.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The rule.
    pub limit: Arc<Limit>,
    /// `None`: allowed with this many left; `Some(d)`: over, retry after `d`.
    pub retry_after: Option<Duration>,
    /// Requests left (0 when over).
    pub remaining: u64,
}

impl Limit {
    /// Compiles `rule` of `policy`, shared by `replicas` gateways.
    pub fn new(
        policy: &str,
        rule: &RateLimitRule,
        replicas: u32,
        services: Option<Vec<String>>,
    ) -> Self {
        let replicas = replicas.max(1);
        let share = |n: i32| (u32::try_from(n).unwrap_or(1) / replicas).max(1);
        let requests = share(rule.requests);
        // Fewer requests than replicas: each replica allows one per a longer period, so the
        // shop-wide total stays `requests` per `period` (not one per replica per period).
        let total = u32::try_from(rule.requests).unwrap_or(1).max(1);
        let stretch = if total < replicas {
            f64::from(replicas) / f64::from(total)
        } else {
            1.0
        };
        let period = rule
            .period
            .get()
            .max(Duration::from_millis(1))
            .mul_f64(stretch);
        let counter = match rule.algorithm {
            Algorithm::TokenBucket => {
                let burst = share(rule.burst.unwrap_or(rule.requests));
                let quota = Quota::with_period(period / requests)
                    .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
                Counter::TokenBucket(
                    RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
                )
            }
            Algorithm::SlidingWindow => {
                Counter::SlidingWindow(SlidingWindow::new(u64::from(requests), period))
            }
        };
        Self {
            policy: policy.to_owned(),
            rule: rule.clone(),
            replicas,
            hasher: std::hash::RandomState::new(),
            services,
            counter,
        }
    }

    /// Whether the rule counts this request.
    pub fn matches(&self, facts: &RequestFacts<'_>) -> bool {
        if let Some(services) = &self.services
            && !services.iter().any(|s| s == facts.service)
        {
            return false;
        }
        request_matches(&self.rule.match_, facts.method, facts.path, facts.headers)
    }

    /// The slot the request is counted in.
    fn slot(&self, facts: &RequestFacts<'_>) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(self.key(facts)) % SLOTS
    }

    /// The key the request is counted under.
    fn key(&self, facts: &RequestFacts<'_>) -> String {
        let header = |name: &str| {
            facts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        // An IPv6 client owns a /64 at least: counting its addresses apart would let it pick
        // a new one for every request. An IPv4-mapped IPv6 address is its IPv4 address.
        let client = || match facts
            .client_ip
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.to_canonical())
        {
            Ok(std::net::IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Ok(ip) => format!("ip:{ip}"),
            Err(_) => format!("ip:{}", facts.client_ip),
        };
        // Requests without what the rule keys on are counted per client address, never in one
        // bucket shared by every such client (which one client could drain for all).
        let or_client = |value: Option<String>| match value {
            Some(v) if !v.is_empty() => v,
            _ => client(),
        };
        match self.rule.client_key.type_ {
            ClientKeyType::ClientIP => client(),
            ClientKeyType::User => or_client(facts.user.map(|u| format!("user:{u}"))),
            ClientKeyType::ApiKey => or_client(header("x-api-key").map(|k| format!("key:{k}"))),
            ClientKeyType::Header => or_client(
                header(self.rule.client_key.header.as_deref().unwrap_or(""))
                    .map(|v| format!("header:{v}")),
            ),
        }
    }

    /// Counts the request.
    pub fn check(self: &Arc<Self>, facts: &RequestFacts<'_>) -> Outcome {
        let key = self.slot(facts);
        let (retry_after, remaining) = match &self.counter {
            Counter::TokenBucket(buckets) => match buckets.check_key(&key) {
                Ok(snapshot) => (None, u64::from(snapshot.remaining_burst_capacity())),
                Err(not_until) => (Some(not_until.wait_time_from(buckets.clock().now())), 0),
            },
            Counter::SlidingWindow(window) => match window.check(key, Instant::now()) {
                Verdict::Allowed { remaining } => (None, remaining),
                Verdict::Limited { retry_after } => (Some(retry_after), 0),
            },
        };
        Outcome {
            limit: self.clone(),
            retry_after,
            remaining,
        }
    }

    /// Drops per-client state nobody needs any more (bounded memory under many clients).
    pub fn forget_idle(&self) {
        match &self.counter {
            Counter::TokenBucket(buckets) => {
                buckets.retain_recent();
                buckets.shrink_to_fit();
            }
            Counter::SlidingWindow(window) => window.forget_idle(Instant::now()),
        }
    }

    /// The `RateLimit-Policy` item (IETF httpapi ratelimit-headers): quota and window.
    pub fn policy_item(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.rule.name,
            self.rule.requests,
            self.rule.period.get().as_secs().max(1)
        )
    }
}

/// Whether `method` is one of `methods`. `HEAD` is `GET` without the body — servers answer it
/// with the GET handler — so a rule for GET counts HEAD too, or HEAD would bypass it.
fn method_matches(methods: &[HttpMethod], method: &Method) -> bool {
    methods.is_empty()
        || methods.iter().any(|m| {
            if *m == HttpMethod::GET && method == Method::HEAD {
                return true;
            }
            let name = match m {
                HttpMethod::GET => "GET",
                HttpMethod::HEAD => "HEAD",
                HttpMethod::POST => "POST",
                HttpMethod::PUT => "PUT",
                HttpMethod::PATCH => "PATCH",
                HttpMethod::DELETE => "DELETE",
                HttpMethod::OPTIONS => "OPTIONS",
            };
            name == method.as_str()
        })
}

/// Whether `path` is `prefix` or below it at a segment boundary.
pub fn under_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.is_empty())
}

/// Whether a request matches a rule's `match`.
pub fn request_matches(m: &RequestMatch, method: &Method, path: &str, headers: &HeaderMap) -> bool {
    if let Some(exact) = &m.path
        && exact != path
    {
        return false;
    }
    if let Some(prefix) = &m.path_prefix
        && !under_prefix(path, prefix)
    {
        return false;
    }
    method_matches(&m.methods, method)
        && m.headers.iter().all(|h| {
            headers
                .get_all(h.name.as_str())
                .iter()
                .any(|v| v.as_bytes() == h.value.as_bytes())
        })
}

/// The answer of every matching rule: `Err` with the refusing outcome when an enforcing rule
/// refuses, else `Ok` with the tightest outcome (for the response headers). Shadow refusals
/// are returned in the third element for metrics.
pub fn evaluate(
    limits: &[Arc<Limit>],
    facts: &RequestFacts<'_>,
    pass: Pass,
) -> (Result<Option<Outcome>, Outcome>, Vec<Outcome>) {
    let mut tightest: Option<Outcome> = None;
    let mut refused: Option<Outcome> = None;
    let mut shadowed = Vec::new();
    let in_pass =
        |l: &&Arc<Limit>| (l.rule.client_key.type_ == ClientKeyType::User) == (pass == Pass::User);
    for limit in limits.iter().filter(in_pass).filter(|l| l.matches(facts)) {
        let outcome = limit.check(facts);
        if outcome.retry_after.is_some() {
            if limit.rule.shadow {
                shadowed.push(outcome);
                continue;
            }
            let longer = refused
                .as_ref()
                .is_none_or(|r| r.retry_after < outcome.retry_after);
            if longer {
                refused = Some(outcome);
            }
            continue;
        }
        if !limit.rule.shadow
            && tightest
                .as_ref()
                .is_none_or(|t| outcome.remaining < t.remaining)
        {
            tightest = Some(outcome);
        }
    }
    match refused {
        Some(r) => (Err(r), shadowed),
        None => (Ok(tightest), shadowed),
    }
}

/// Which rules a pass counts: those keyed on who the client is must wait for the token to be
/// verified; the others are counted before, so a flood of bad tokens is limited like any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Rules keyed by address, API key or header, before the token is checked.
    BeforeIdentity,
    /// Rules keyed by the verified user.
    User,
}

/// The tighter (fewer requests left) of two allowed outcomes.
pub fn tighter(a: Option<Outcome>, b: Option<Outcome>) -> Option<Outcome> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// `RateLimit-Policy` and `RateLimit` headers for an outcome.
pub fn headers(outcome: &Outcome, headers: &mut HeaderMap) {
    let reset = outcome
        .retry_after
        .map_or(0, |d| d.as_secs_f64().ceil() as u64);
    if let Ok(v) = HeaderValue::from_str(&outcome.limit.policy_item()) {
        headers.insert("ratelimit-policy", v);
    }
    let item = format!(
        "\"{}\";r={};t={reset}",
        outcome.limit.rule.name, outcome.remaining
    );
    if let Ok(v) = HeaderValue::from_str(&item) {
        headers.insert("ratelimit", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> RateLimitRule {
        serde_saphyr::from_str(yaml).expect("rule parses")
    }

    /// The rule in `yaml` of policy `p`, shared by `replicas`, on every route.
    fn limit(yaml: &str, replicas: u32) -> Arc<Limit> {
        Arc::new(Limit::new("p", &rule(yaml), replicas, None))
    }

    fn facts<'a>(
        headers: &'a HeaderMap,
        method: &'a Method,
        path: &'a str,
        ip: &'a str,
    ) -> RequestFacts<'a> {
        RequestFacts {
            service: "products",
            method,
            path,
            headers,
            client_ip: ip,
            user: None,
        }
    }

    #[test]
    fn a_token_bucket_allows_its_burst_then_refuses_with_a_retry_time() {
        let limit = limit(
            "{name: r, clientKey: {type: ClientIP}, requests: 60, period: 1m, burst: 3}",
            1,
        );
        let (h, m) = (HeaderMap::new(), Method::GET);
        let f = facts(&h, &m, "/v1/products", "10.0.0.1");
        let remaining: Vec<u64> = (0..3).map(|_| limit.check(&f).remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limit.check(&f);
        let wait = refused.retry_after.expect("the fourth is refused");
        assert!(
            wait <= Duration::from_secs(1),
            "one token per second refills: {wait:?}"
        );
        let other = facts(&h, &m, "/v1/products", "10.0.0.2");
        assert!(
            limit.check(&other).retry_after.is_none(),
            "another client has its own bucket"
        );
    }

    #[test]
    fn the_limit_is_shared_across_replicas() {
        let limit = limit(
            "{name: r, clientKey: {type: ClientIP}, requests: 10, period: 1m, algorithm: SlidingWindow}",
            2,
        );
        let (h, m) = (HeaderMap::new(), Method::GET);
        let f = facts(&h, &m, "/", "10.0.0.1");
        let passed = (0..10)
            .filter(|_| limit.check(&f).retry_after.is_none())
            .count();
        assert_eq!(passed, 5, "each of two replicas enforces half");
    }

    #[test]
    fn an_ipv6_client_is_one_key_across_its_slash_64() {
        let limit = limit(
            "{name: r, clientKey: {type: ClientIP}, requests: 1, period: 1m, algorithm: SlidingWindow}",
            1,
        );
        let (h, m) = (HeaderMap::new(), Method::GET);
        assert!(
            limit
                .check(&facts(&h, &m, "/", "2001:db8:1:2::1"))
                .retry_after
                .is_none()
        );
        assert!(
            limit
                .check(&facts(&h, &m, "/", "2001:db8:1:2::beef"))
                .retry_after
                .is_some()
        );
        assert!(
            limit
                .check(&facts(&h, &m, "/", "2001:db8:1:3::1"))
                .retry_after
                .is_none()
        );
    }

    #[test]
    fn fewer_requests_than_replicas_stretch_each_replicas_period() {
        let limit = limit(
            "{name: r, clientKey: {type: ClientIP}, requests: 1, period: 1m, algorithm: SlidingWindow}",
            3,
        );
        let (h, m) = (HeaderMap::new(), Method::GET);
        let f = facts(&h, &m, "/", "10.0.0.1");
        assert!(limit.check(&f).retry_after.is_none());
        let wait = limit
            .check(&f)
            .retry_after
            .expect("one per three minutes here");
        assert!(wait > Duration::from_secs(120), "{wait:?}");
    }

    #[test]
    fn matches_follow_path_prefix_method_and_headers() {
        let m: RequestMatch = serde_saphyr::from_str(
            "{pathPrefix: /v1/products, methods: [GET], headers: [{name: X-Tier, value: free}]}",
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-tier", HeaderValue::from_static("free"));
        assert!(request_matches(&m, &Method::GET, "/v1/products/1", &h));
        assert!(!request_matches(&m, &Method::GET, "/v1/productsx", &h));
        assert!(!request_matches(&m, &Method::POST, "/v1/products", &h));
        assert!(!request_matches(
            &m,
            &Method::GET,
            "/v1/products",
            &HeaderMap::new()
        ));
    }

    #[test]
    fn head_is_counted_by_a_rule_for_get() {
        let m: RequestMatch =
            serde_saphyr::from_str("{pathPrefix: /v1/products, methods: [GET]}").unwrap();
        let h = HeaderMap::new();
        assert!(request_matches(&m, &Method::HEAD, "/v1/products", &h));
        let only_head: RequestMatch = serde_saphyr::from_str("{methods: [HEAD]}").unwrap();
        assert!(!request_matches(&only_head, &Method::GET, "/", &h));
    }

    #[test]
    fn an_ipv4_mapped_address_is_counted_as_its_ipv4_address() {
        let limit = limit(
            "{name: r, clientKey: {type: ClientIP}, requests: 1, period: 1m}",
            1,
        );
        let (h, m) = (HeaderMap::new(), Method::GET);
        assert!(
            limit
                .check(&facts(&h, &m, "/", "203.0.113.7"))
                .retry_after
                .is_none()
        );
        assert!(
            limit
                .check(&facts(&h, &m, "/", "::ffff:203.0.113.7"))
                .retry_after
                .is_some(),
            "the same client, spelled as IPv6"
        );
    }

    #[test]
    fn requests_without_the_rules_key_are_counted_per_client_not_in_one_shared_bucket() {
        for key in [
            "{type: User}",
            "{type: ApiKey}",
            "{type: Header, header: X-Tenant}",
        ] {
            let limit = limit(
                &format!("{{name: r, clientKey: {key}, requests: 1, period: 1m}}"),
                1,
            );
            let (h, m) = (HeaderMap::new(), Method::GET);
            let first = facts(&h, &m, "/", "203.0.113.7");
            assert!(limit.check(&first).retry_after.is_none(), "{key}");
            assert!(
                limit.check(&first).retry_after.is_some(),
                "{key}: the same client waits"
            );
            assert!(
                limit
                    .check(&facts(&h, &m, "/", "198.51.100.9"))
                    .retry_after
                    .is_none(),
                "{key}: another anonymous client has its own count"
            );
        }
        let limit = limit(
            "{name: r, clientKey: {type: User}, requests: 1, period: 1m}",
            1,
        );
        let (h, m) = (HeaderMap::new(), Method::GET);
        let mut signed_in = facts(&h, &m, "/", "203.0.113.7");
        signed_in.user = Some("user-1");
        assert!(limit.check(&signed_in).retry_after.is_none());
        signed_in.client_ip = "198.51.100.9";
        assert!(
            limit.check(&signed_in).retry_after.is_some(),
            "a user is one key wherever they are"
        );
    }

    #[test]
    fn shadow_rules_report_refusals_but_never_refuse() {
        let shadow = limit(
            "{name: s, clientKey: {type: ClientIP}, requests: 1, period: 1m, shadow: true}",
            1,
        );
        let (h, m) = (HeaderMap::new(), Method::GET);
        let f = facts(&h, &m, "/", "10.0.0.1");
        let limits = vec![shadow];
        assert!(evaluate(&limits, &f, Pass::BeforeIdentity).0.is_ok());
        let (verdict, shadowed) = evaluate(&limits, &f, Pass::BeforeIdentity);
        assert!(verdict.is_ok(), "shadow mode never refuses");
        assert_eq!(shadowed.len(), 1, "but the refusal is reported");
    }
}
