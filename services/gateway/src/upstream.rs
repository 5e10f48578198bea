//! The endpoints of each service: where they come from (the local table, or EndpointSlices in
//! a cluster), which one takes a request (power of two choices on requests in flight, among
//! those that are healthy and not ejected), active health checks, and outlier ejection.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

pub use tienda_kit::policy::SERVICES;
use tienda_kit::resilience::Ejection;
pub use tienda_kit::resilience::OutlierConfig;

/// One endpoint of a service.
#[derive(Debug)]
pub struct Endpoint {
    /// `http://host:port`.
    pub base: String,
    /// `host:port`, parsed once (requests are addressed without re-parsing a URL each time).
    pub authority: Option<axum::http::uri::Authority>,
    in_flight: AtomicUsize,
    /// The last active health check passed (true until a check says otherwise).
    healthy: AtomicBool,
    ejection: Ejection,
}

impl Endpoint {
    /// An endpoint at `base`.
    pub fn new(base: &str) -> Self {
        let base = base.trim_end_matches('/').to_owned();
        Self {
            authority: base.strip_prefix("http://").and_then(|a| a.parse().ok()),
            base,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            ejection: Ejection::default(),
        }
    }

    fn ejected(&self, now: Instant) -> bool {
        self.ejection.is_ejected(now)
    }

    /// Whether it takes requests at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected(now)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight to an endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of one service.
#[derive(Debug, Default)]
pub struct Pool {
    /// Current endpoints.
    pub endpoints: Vec<Arc<Endpoint>>,
    tick: AtomicU64,
}

impl Pool {
    /// A pool of these endpoints.
    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        Self {
            endpoints,
            tick: AtomicU64::new(0),
        }
    }

    /// Picks an endpoint: of two rotating candidates among the available ones (all, if none
    /// is — better to try than to refuse), the one with fewer requests in flight. `avoid` is
    /// skipped when another choice exists (a retry goes elsewhere).
    pub fn pick(&self, now: Instant, avoid: Option<&Arc<Endpoint>>) -> Option<Arc<Endpoint>> {
        let mut candidates: Vec<&Arc<Endpoint>> =
            self.endpoints.iter().filter(|e| e.available(now)).collect();
        if candidates.is_empty() {
            candidates = self.endpoints.iter().collect();
        }
        if candidates.len() > 1
            && let Some(avoid) = avoid
        {
            candidates.retain(|e| !Arc::ptr_eq(e, avoid));
        }
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0].clone()),
            n => {
                let t = self.tick.fetch_add(1, Ordering::Relaxed) as usize;
                let (a, b) = (candidates[t % n], candidates[(t + 1) % n]);
                let load = |e: &Endpoint| e.in_flight.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a }.clone())
            }
        }
    }

    /// Reports a call's outcome on `endpoint`; ejects it when it failed `consecutive_errors`
    /// times in a row and the ejection limit allows. Returns whether it was ejected now.
    pub fn report(
        &self,
        endpoint: &Endpoint,
        ok: bool,
        outlier: Option<&OutlierConfig>,
        now: Instant,
    ) -> bool {
        let room = || {
            let ejected = self.endpoints.iter().filter(|e| e.ejected(now)).count();
            outlier.is_some_and(|cfg| ejected < cfg.allowed(self.endpoints.len()))
        };
        let Some(duration) = endpoint.ejection.record(ok, outlier, now, room) else {
            return false;
        };
        tracing::warn!(endpoint = %endpoint.base, ejected_for_ms = duration.as_millis() as u64, "outlier endpoint ejected");
        true
    }

    /// Endpoints that take requests at `now`.
    pub fn available(&self, now: Instant) -> usize {
        self.endpoints.iter().filter(|e| e.available(now)).count()
    }
}

/// Every service's endpoints; swapped whole when discovery changes them.
#[derive(Debug, Default)]
pub struct Upstreams {
    services: ArcSwap<BTreeMap<String, Arc<Pool>>>,
}

impl Upstreams {
    /// Parses the local table: `component=url[|url...]` pairs separated by commas.
    pub fn parse(table: &str) -> anyhow::Result<Self> {
        let mut services = BTreeMap::new();
        for pair in table.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, urls) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("GATEWAY_UPSTREAMS: {pair:?} is not component=url")
            })?;
            if !SERVICES.contains(&name) {
                anyhow::bail!(
                    "GATEWAY_UPSTREAMS: {name:?} is not a service ({})",
                    SERVICES.join(", ")
                );
            }
            let mut endpoints = Vec::new();
            for url in urls.split('|').map(str::trim) {
                anyhow::ensure!(
                    url.starts_with("http://"),
                    "GATEWAY_UPSTREAMS: {url:?} must be an http:// URL"
                );
                endpoints.push(url.to_owned());
            }
            services.insert(name.to_owned(), endpoints);
        }
        let upstreams = Self::default();
        upstreams.replace(services);
        Ok(upstreams)
    }

    /// Sets the endpoints of every service, keeping the state (in flight, ejections) of those
    /// that stay.
    pub fn replace(&self, table: BTreeMap<String, Vec<String>>) {
        let old = self.services.load();
        let next = table
            .into_iter()
            .map(|(service, urls)| {
                let kept = old.get(&service);
                let endpoints = urls
                    .iter()
                    .map(|url| {
                        let url = url.trim_end_matches('/');
                        kept.and_then(|p| p.endpoints.iter().find(|e| e.base == url))
                            .cloned()
                            .unwrap_or_else(|| Arc::new(Endpoint::new(url)))
                    })
                    .collect();
                (service, Arc::new(Pool::new(endpoints)))
            })
            .collect();
        self.services.store(Arc::new(next));
    }

    /// The pool of `service`.
    pub fn pool(&self, service: &str) -> Option<Arc<Pool>> {
        self.services.load().get(service).cloned()
    }

    /// Every endpoint, by service.
    pub fn all(&self) -> Vec<(String, Arc<Endpoint>)> {
        self.services
            .load()
            .iter()
            .flat_map(|(s, p)| p.endpoints.iter().map(move |e| (s.clone(), e.clone())))
            .collect()
    }
}

/// Checks `GET <endpoint>/readyz` of every endpoint every `interval`; an endpoint that fails
/// `unhealthy_after` checks in a row leaves the rotation until one passes.
pub async fn health_checks(
    upstreams: Arc<Upstreams>,
    interval: Duration,
    shutdown: tienda_kit::shutdown::Shutdown,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "health checks cannot run");
            return;
        }
    };
    let mut failures: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    const UNHEALTHY_AFTER: u32 = 2;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.wait() => return,
        }
        for (service, endpoint) in upstreams.all() {
            let ok = http
                .get(format!("{}/readyz", endpoint.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let count = failures.entry(endpoint.base.clone()).or_insert(0);
            *count = if ok { 0 } else { *count + 1 };
            let healthy = *count < UNHEALTHY_AFTER;
            if endpoint.healthy.swap(healthy, Ordering::Relaxed) != healthy {
                if healthy {
                    tracing::info!(service, endpoint = %endpoint.base, "endpoint healthy again");
                } else {
                    tracing::warn!(service, endpoint = %endpoint.base, "endpoint failed its health checks; out of rotation");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        Pool::new(
            (0..n)
                .map(|i| Arc::new(Endpoint::new(&format!("http://e{i}:1"))))
                .collect(),
        )
    }

    #[test]
    fn the_upstream_table_is_checked() {
        assert!(Upstreams::parse("auth=http://a:1,products=http://b:1|http://c:1").is_ok());
        assert!(Upstreams::parse("shop=http://a:1").is_err());
        assert!(Upstreams::parse("auth=https://a:1").is_err());
        assert!(Upstreams::parse("auth").is_err());
    }

    #[test]
    fn an_outlier_is_ejected_for_its_time_then_returns_and_repeats_double_it() {
        let p = pool(2);
        let cfg = OutlierConfig {
            consecutive_errors: 3,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 50,
        };
        let t = Instant::now();
        let bad = p.endpoints[0].clone();
        assert!(!p.report(&bad, false, Some(&cfg), t));
        assert!(!p.report(&bad, false, Some(&cfg), t));
        assert!(p.report(&bad, false, Some(&cfg), t), "third failure ejects");
        for _ in 0..10 {
            assert_eq!(p.pick(t, None).unwrap().base, "http://e1:1");
        }
        let back = t + Duration::from_secs(10);
        assert!(bad.available(back));
        for _ in 0..3 {
            p.report(&bad, false, Some(&cfg), back);
        }
        assert!(
            !bad.available(back + Duration::from_secs(19)),
            "second ejection lasts 20 s"
        );
        assert!(bad.available(back + Duration::from_secs(20)));
        // A success after it returned resets the doubling.
        let later = back + Duration::from_secs(30);
        p.report(&bad, true, Some(&cfg), later);
        for _ in 0..3 {
            p.report(&bad, false, Some(&cfg), later);
        }
        assert!(
            bad.available(later + Duration::from_secs(10)),
            "base time again"
        );
    }

    #[test]
    fn no_more_than_the_allowed_share_is_ejected_and_a_retry_goes_elsewhere() {
        let p = pool(2);
        let cfg = OutlierConfig {
            consecutive_errors: 1,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 50,
        };
        let t = Instant::now();
        assert!(p.report(&p.endpoints[0], false, Some(&cfg), t));
        assert!(
            !p.report(&p.endpoints[1], false, Some(&cfg), t),
            "one of two at most"
        );
        assert_eq!(p.available(t), 1);
        // A retry avoids the endpoint that just failed only when another available one
        // exists: an ejected endpoint is no better choice.
        let avoid = p.endpoints[1].clone();
        assert_eq!(p.pick(t, Some(&avoid)).unwrap().base, "http://e1:1");
        let q = pool(3);
        let first = q.endpoints[0].clone();
        for _ in 0..10 {
            assert_ne!(q.pick(t, Some(&first)).unwrap().base, "http://e0:1");
        }
    }

    #[test]
    fn replacing_endpoints_keeps_the_state_of_those_that_stay() {
        let u = Upstreams::parse("products=http://a:1|http://b:1").unwrap();
        let a = u.pool("products").unwrap().endpoints[0].clone();
        let _busy = a.start();
        u.replace(BTreeMap::from([(
            "products".to_owned(),
            vec!["http://a:1".to_owned(), "http://c:1".to_owned()],
        )]));
        let kept = u.pool("products").unwrap().endpoints[0].clone();
        assert!(Arc::ptr_eq(&a, &kept));
        assert_eq!(kept.in_flight.load(Ordering::Relaxed), 1);
    }
}
