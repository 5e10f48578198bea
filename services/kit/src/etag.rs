//! Optimistic concurrency over HTTP (RFC 9110 §8.8.3, §13.1). A resource's row version is its
//! strong ETag (`"3"`). A client reads it, and sends it back in `If-Match` with its change; the
//! change is refused with 412 when the resource moved on since, and with 428 where a service
//! requires `If-Match` and the client sent none, so a concurrent change is never overwritten
//! unseen. `If-None-Match` lets a read answer 304 to a client that has the current version.
//!
//! Tags are read leniently: `W/"3"` and a bare `3` name version 3 as `"3"` does.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::problem::Problem;

/// The strong ETag of a row version: `"3"`.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// [`etag`] as a header value.
pub fn header_value(version: i64) -> HeaderValue {
    HeaderValue::from_str(&etag(version)).expect("quoted digits")
}

/// `body` answered with `status` and the ETag of `version`, so the client can send it back.
pub fn tagged(status: StatusCode, version: i64, body: impl IntoResponse) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, header_value(version));
    response
}

/// What a request's `If-Match` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any current version.
    Any,
    /// One of these versions.
    Versions(Vec<i64>),
}

impl IfMatch {
    /// The request's `If-Match`, or `None` without one. A tag that is not a version of ours is
    /// [`Precondition::Malformed`].
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, Precondition> {
        let Some(values) = header_list(headers, header::IF_MATCH) else {
            return Ok(None);
        };
        if values.contains(&"*") {
            return Ok(Some(Self::Any));
        }
        values
            .iter()
            .map(|tag| version(tag).ok_or(Precondition::Malformed))
            .collect::<Result<Vec<_>, _>>()
            .map(|versions| Some(Self::Versions(versions)))
    }

    /// The request's `If-Match`, where a change requires one: without it,
    /// [`Precondition::Required`].
    pub fn required(headers: &HeaderMap) -> Result<Self, Precondition> {
        Self::from_headers(headers)?.ok_or(Precondition::Required)
    }

    /// Whether the resource at `current` is one the client asked for.
    pub fn matches(&self, current: i64) -> bool {
        match self {
            Self::Any => true,
            Self::Versions(versions) => versions.contains(&current),
        }
    }

    /// `Ok` when [`Self::matches`], else [`Precondition::Stale`] carrying the current version.
    pub fn check(&self, current: i64) -> Result<(), Precondition> {
        if self.matches(current) {
            Ok(())
        } else {
            Err(Precondition::Stale { current })
        }
    }
}

/// Whether the request's `If-None-Match` names `etag` (or is `*`): a read then answers 304.
/// Compared weakly, as RFC 9110 §13.1.2 says: `W/"3"` names `"3"`.
pub fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    header_list(headers, header::IF_NONE_MATCH).is_some_and(|tags| {
        tags.iter()
            .any(|tag| *tag == "*" || tag.trim_start_matches("W/") == etag)
    })
}

/// The comma-separated members of every `name` header, trimmed; `None` when there is none (or
/// none readable as text).
fn header_list(headers: &HeaderMap, name: header::HeaderName) -> Option<Vec<&str>> {
    let tags: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .collect();
    (!tags.is_empty()).then_some(tags)
}

/// The version a tag names: `"3"`, `W/"3"` or `3`.
fn version(tag: &str) -> Option<i64> {
    tag.trim_start_matches("W/").trim_matches('"').parse().ok()
}

/// Why a conditional change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Precondition {
    /// The change needs `If-Match` and has none: 428.
    #[error("If-Match required")]
    Required,
    /// `If-Match` names another version than the current one: 412, with the current ETag.
    #[error("stale version; current is {current}")]
    Stale {
        /// The current version.
        current: i64,
    },
    /// `If-Match` holds something that is not an ETag of ours: 422 naming the header.
    #[error("malformed If-Match")]
    Malformed,
}

impl From<Precondition> for Problem {
    fn from(precondition: Precondition) -> Self {
        match precondition {
            Precondition::Required => Problem::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition-required",
                "If-Match required",
            )
            .with_detail(
                "Send the ETag from your last read in If-Match, so a concurrent change is not \
                 overwritten.",
            ),
            Precondition::Stale { current } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "stale",
                "The resource changed",
            )
            .with_detail(format!(
                "If-Match does not match the current version {}; read it again and reapply \
                 the change.",
                etag(current)
            ))
            .with_header(header::ETAG, header_value(current)),
            Precondition::Malformed => Problem::invalid_fields(vec![(
                "If-Match".into(),
                "must be an ETag from this API, such as \"3\"".into(),
            )]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_version_is_its_quoted_number() {
        assert_eq!(etag(3), "\"3\"");
        assert_eq!(header_value(12), HeaderValue::from_static("\"12\""));
    }

    #[test]
    fn a_tagged_answer_carries_its_status_and_etag() {
        let response = tagged(StatusCode::CREATED, 7, "body");

        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()[header::ETAG], "\"7\"");
    }

    #[test]
    fn if_match_reads_one_tag_a_list_and_several_headers() {
        let one = headers(header::IF_MATCH, &["\"3\""]);
        let list = headers(header::IF_MATCH, &["\"3\", W/\"4\" ,5"]);
        let split = headers(header::IF_MATCH, &["\"3\"", "\"7\""]);

        assert_eq!(IfMatch::required(&one), Ok(IfMatch::Versions(vec![3])));
        assert_eq!(
            IfMatch::required(&list),
            Ok(IfMatch::Versions(vec![3, 4, 5]))
        );
        assert_eq!(IfMatch::required(&split), Ok(IfMatch::Versions(vec![3, 7])));
    }

    #[test]
    fn if_match_star_matches_any_version() {
        let star = IfMatch::required(&headers(header::IF_MATCH, &["*"])).unwrap();

        assert_eq!(star, IfMatch::Any);
        assert_eq!(star.check(1), Ok(()));
        assert_eq!(star.check(99), Ok(()));
    }

    #[test]
    fn a_missing_if_match_is_required_only_where_asked() {
        let none = HeaderMap::new();

        assert_eq!(IfMatch::from_headers(&none), Ok(None));
        assert_eq!(IfMatch::required(&none), Err(Precondition::Required));
    }

    #[test]
    fn a_tag_that_is_not_a_version_is_malformed() {
        let bad = headers(header::IF_MATCH, &["\"3\", \"abc\""]);

        assert_eq!(IfMatch::required(&bad), Err(Precondition::Malformed));
    }

    #[test]
    fn an_older_version_is_stale_and_names_the_current_one() {
        let asked = IfMatch::Versions(vec![2, 3]);

        assert_eq!(asked.check(3), Ok(()));
        assert_eq!(asked.check(4), Err(Precondition::Stale { current: 4 }));
    }

    #[test]
    fn a_stale_version_is_a_412_carrying_the_current_etag() {
        let problem = Problem::from(Precondition::Stale { current: 4 });

        assert_eq!(problem.status, 412);
        assert!(problem.problem_type.ends_with("/stale"));
        assert!(problem.detail.unwrap().contains("\"4\""));
        assert_eq!(
            problem.headers,
            vec![(header::ETAG, HeaderValue::from_static("\"4\""))]
        );
    }

    #[test]
    fn a_missing_if_match_is_a_428_and_a_malformed_one_a_422_naming_it() {
        let required = Problem::from(Precondition::Required);
        let malformed = Problem::from(Precondition::Malformed);

        assert_eq!(required.status, 428);
        assert!(required.problem_type.ends_with("/precondition-required"));
        assert_eq!(malformed.status, 422);
        assert_eq!(malformed.errors[0].field, "If-Match");
    }

    #[test]
    fn if_none_match_compares_weakly_and_honours_star() {
        let current = etag(5);

        assert!(none_match(
            &headers(header::IF_NONE_MATCH, &["\"4\", W/\"5\""]),
            &current
        ));
        assert!(none_match(
            &headers(header::IF_NONE_MATCH, &["*"]),
            &current
        ));
        assert!(!none_match(
            &headers(header::IF_NONE_MATCH, &["\"4\""]),
            &current
        ));
        assert!(!none_match(&HeaderMap::new(), &current));
    }
}
