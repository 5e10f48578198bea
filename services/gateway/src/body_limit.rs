//! The largest request body each route takes.
//!
//! Most routes take small JSON documents and keep the common limit (`MAX_BODY_BYTES`, 1 MiB),
//! so a client cannot make the gateway or a service hold large bodies. A few take bulk
//! uploads that the service reads as a stream — the products catalog import, up to 64 MiB by
//! default (`PRODUCTS_IMPORT_MAX_BYTES`) — and get their own limit here, built in and
//! overridable with `GATEWAY_BODY_LIMITS`.
//!
//! `products`' other bulk endpoints (`POST /v1/products/prices`,
//! `POST /v1/inventory/adjustments`) read JSON under the service's own common limit, so they
//! keep the common limit at the gateway too.

use axum::http::Method;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
const GIB: usize = 1024 * MIB;

/// Routes whose bodies may be larger than the common limit, before any override:
/// `(method, path, bytes)`.
const BUILT_IN: [(Option<Method>, &str, usize); 1] =
    [(Some(Method::POST), "/v1/products/import", 64 * MIB)];

/// One route's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLimit {
    /// Requests with this method only (`None`: every method).
    pub method: Option<Method>,
    /// This path and the paths below it (`/v1/products/import` also covers
    /// `/v1/products/import/...`, not `/v1/products/imports`).
    pub path: String,
    /// Largest body, in bytes.
    pub bytes: usize,
}

impl RouteLimit {
    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && path
                .strip_prefix(self.path.trim_end_matches('/'))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// The per-route table: the most specific matching route decides (the longest path; at equal
/// paths, the one naming the method), no match takes the common limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyLimits {
    common: usize,
    routes: Vec<RouteLimit>,
}

impl BodyLimits {
    /// The built-in table over `common` bytes for every other route, with the entries of
    /// `GATEWAY_BODY_LIMITS` (`[METHOD ]PATH=SIZE`, comma-separated) replacing built-in ones
    /// for the same method and path and adding the others.
    pub fn parse(overrides: &str, common: usize) -> anyhow::Result<Self> {
        let mut routes: Vec<RouteLimit> = BUILT_IN
            .iter()
            .map(|(method, path, bytes)| RouteLimit {
                method: method.clone(),
                path: (*path).to_owned(),
                bytes: *bytes,
            })
            .collect();
        for entry in overrides
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let route = parse_entry(entry).map_err(|why| {
                anyhow::anyhow!(
                    "GATEWAY_BODY_LIMITS: entry {entry:?}: {why}; expected [METHOD ]PATH=SIZE, \
                     e.g. \"POST /v1/products/import=64MiB\""
                )
            })?;
            routes.retain(|r| r.method != route.method || r.path != route.path);
            routes.push(route);
        }
        Ok(Self { common, routes })
    }

    /// The limit for routes the table does not name.
    pub fn common(&self) -> usize {
        self.common
    }

    /// The largest body `method path` may carry, in bytes.
    pub fn limit(&self, method: &Method, path: &str) -> usize {
        self.routes
            .iter()
            .filter(|r| r.matches(method, path))
            .max_by_key(|r| (r.path.trim_end_matches('/').len(), r.method.is_some()))
            .map_or(self.common, |r| r.bytes)
    }
}

fn parse_entry(entry: &str) -> Result<RouteLimit, String> {
    let (route, size) = entry
        .rsplit_once('=')
        .ok_or_else(|| "no =SIZE".to_owned())?;
    let mut words = route.split_whitespace();
    let (method, path) = match (words.next(), words.next(), words.next()) {
        (Some(path), None, None) => (None, path),
        (Some(method), Some(path), None) => {
            let valid = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
            let method = valid
                .then(|| Method::from_bytes(method.as_bytes()).ok())
                .flatten()
                .ok_or_else(|| format!("{method:?} is not an HTTP method (e.g. POST)"))?;
            (Some(method), path)
        }
        _ => return Err("before = comes a path, or a method and a path".to_owned()),
    };
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with /"));
    }
    Ok(RouteLimit {
        method,
        path: path.to_owned(),
        bytes: parse_size(size.trim())?,
    })
}

/// `1048576`, `512KiB`, `64MiB`, `1GiB`.
fn parse_size(size: &str) -> Result<usize, String> {
    let split = size
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(size.len());
    let (digits, unit) = size.split_at(split);
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        _ => {
            return Err(format!(
                "size {size:?} is not bytes or KiB, MiB or GiB (e.g. 64MiB)"
            ));
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("size {size:?} is not bytes or KiB, MiB or GiB (e.g. 64MiB)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_import_takes_64_mib_and_every_other_route_the_common_limit() {
        let limits = BodyLimits::parse("", MIB).unwrap();
        assert_eq!(limits.limit(&Method::POST, "/v1/products/import"), 64 * MIB);
        assert_eq!(limits.limit(&Method::PUT, "/v1/products/import"), MIB);
        assert_eq!(limits.limit(&Method::POST, "/v1/products"), MIB);
        assert_eq!(limits.limit(&Method::POST, "/v1/products/imports"), MIB);
        assert_eq!(limits.limit(&Method::POST, "/v1/products/prices"), MIB);
        assert_eq!(limits.limit(&Method::POST, "/v1/orders"), MIB);
    }

    #[test]
    fn an_override_replaces_the_built_in_entry_and_adds_routes() {
        let limits = BodyLimits::parse(
            "POST /v1/products/import=8MiB, /v1/orders/bulk=512KiB,PUT /v1/orders/bulk/x=3000",
            MIB,
        )
        .unwrap();
        assert_eq!(limits.limit(&Method::POST, "/v1/products/import"), 8 * MIB);
        assert_eq!(limits.limit(&Method::POST, "/v1/orders/bulk/a"), 512 * KIB);
        assert_eq!(limits.limit(&Method::PUT, "/v1/orders/bulk/x"), 3000);
        assert_eq!(limits.limit(&Method::GET, "/v1/orders/bulk/x"), 512 * KIB);
        assert_eq!(limits.limit(&Method::POST, "/v1/orders"), MIB);
    }

    #[test]
    fn at_equal_paths_the_entry_naming_the_method_wins() {
        let limits = BodyLimits::parse("/v1/x=2MiB,POST /v1/x=4MiB", MIB).unwrap();
        assert_eq!(limits.limit(&Method::POST, "/v1/x"), 4 * MIB);
        assert_eq!(limits.limit(&Method::PATCH, "/v1/x"), 2 * MIB);
    }

    #[test]
    fn a_bad_entry_is_refused_with_its_text() {
        for (entry, why) in [
            ("POST /v1/x=64MB", "size \"64MB\""),
            ("POST /v1/x", "no =SIZE"),
            ("post /v1/x=1MiB", "\"post\" is not an HTTP method"),
            ("POST v1/x=1MiB", "must start with /"),
            ("POST /v1/x extra=1MiB", "before = comes a path"),
            ("/v1/x=99999999999999999999GiB", "is not bytes"),
        ] {
            let error = BodyLimits::parse(&format!("/v1/ok=1KiB,{entry}"), MIB)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("entry {entry:?}")) && error.contains(why),
                "{entry}: {error}"
            );
        }
    }
}
