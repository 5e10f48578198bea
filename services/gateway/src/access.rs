//! Who may call what at the edge: per-route access rules from configuration, and who the
//! client is (its address, believing `X-Forwarded-For` only from trusted proxies).

use axum::http::Method;
use serde::Deserialize;

use tienda_kit::policy::rate_limit::under_prefix;

/// What a route needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// A valid access token.
    Authenticated,
    /// A valid access token with this role.
    Role(String),
}

impl<'de> Deserialize<'de> for Access {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "public" => Ok(Self::Public),
            "authenticated" => Ok(Self::Authenticated),
            other => match other.strip_prefix("role:") {
                Some(role) if !role.is_empty() => Ok(Self::Role(role.to_owned())),
                _ => Err(serde::de::Error::custom(format!(
                    "access {other:?}: expected public, authenticated or role:<name>"
                ))),
            },
        }
    }
}

/// One rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Paths at or below this prefix.
    pub path_prefix: String,
    /// These methods only (empty: all).
    #[serde(default)]
    pub methods: Vec<String>,
    /// What the route needs.
    pub access: Access,
}

/// The rules, first match wins.
#[derive(Debug, Clone, Default)]
pub struct AccessRules(Vec<AccessRule>);

impl AccessRules {
    /// Parses `GATEWAY_ACCESS_RULES`.
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        let rules: Vec<AccessRule> = serde_json::from_str(json).map_err(|e| {
            anyhow::anyhow!(
                "GATEWAY_ACCESS_RULES: {e}; expected e.g. \
                 [{{\"path_prefix\": \"/v1/orders\", \"access\": \"authenticated\"}}]"
            )
        })?;
        for rule in &rules {
            anyhow::ensure!(
                rule.path_prefix.starts_with('/'),
                "GATEWAY_ACCESS_RULES: path_prefix {:?} must start with /",
                rule.path_prefix
            );
        }
        Ok(Self(rules))
    }

    /// What `method path` needs.
    pub fn needs(&self, method: &Method, path: &str) -> &Access {
        self.0
            .iter()
            .find(|r| {
                under_prefix(path, &r.path_prefix)
                    && (r.methods.is_empty()
                        || r.methods
                            .iter()
                            .any(|m| m.eq_ignore_ascii_case(method.as_str())))
            })
            .map_or(&Access::Public, |r| &r.access)
    }
}

pub use tienda_kit::net::TrustedProxies;

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use axum::http::HeaderMap;

    use super::*;

    #[test]
    fn the_first_matching_rule_decides_and_no_match_is_public() {
        let rules = AccessRules::parse(
            r#"[{"path_prefix": "/v1/orders", "methods": ["POST"], "access": "authenticated"},
                {"path_prefix": "/v1/admin", "access": "role:admin"}]"#,
        )
        .unwrap();
        assert_eq!(
            rules.needs(&Method::POST, "/v1/orders"),
            &Access::Authenticated
        );
        assert_eq!(rules.needs(&Method::GET, "/v1/orders"), &Access::Public);
        assert_eq!(
            rules.needs(&Method::GET, "/v1/admin/x"),
            &Access::Role("admin".into())
        );
        assert!(AccessRules::parse(r#"[{"path_prefix": "/x", "access": "root"}]"#).is_err());
        assert!(AccessRules::parse(r#"[{"path": "/x", "access": "public"}]"#).is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1").unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 203.0.113.7, 10.1.2.3".parse().unwrap(),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(trusted.client_ip(ip("10.9.9.9"), &h), ip("203.0.113.7"));
        assert_eq!(
            trusted.client_ip(ip("198.51.100.1"), &h),
            ip("198.51.100.1")
        );
        assert!(TrustedProxies::parse("not-a-net").is_err());
    }
}
