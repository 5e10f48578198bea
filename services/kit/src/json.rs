//! A JSON body extractor whose rejections are problem documents naming the field at fault.
//!
//! axum's own `Json` rejects with plain text. This one answers 415 without a JSON content
//! type, 413 over the body limit, 400 for malformed JSON, and 422 with `errors[].field` for a
//! body of the wrong shape — including unknown fields, which request types reject with
//! `#[serde(deny_unknown_fields)]`.

use axum::{
    extract::{FromRequest, Request},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use crate::problem::Problem;

/// JSON request body (extractor) or response body (response).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime_type::Essence>().ok())
            .is_some_and(|m| m.is_json());
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .with_detail("Send the body as JSON with `Content-Type: application/json`."));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(status, "payload-too-large", "Request body too large")
                    .with_detail(rejection.body_text())
            } else {
                Problem::bad_request(rejection.body_text())
            }
        })?;
        from_slice(&bytes).map(Json)
    }
}

/// Parses JSON, mapping errors to problems as the extractor does. A string holding the NUL
/// character (`\u0000`) is refused with a 422 naming its field: PostgreSQL stores no NUL in
/// `text` or `jsonb`, so letting one through would turn a client's input into a 500.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if let Some(field) = nul_field(bytes) {
        let message = "must not contain the NUL character (U+0000)";
        return Err(Problem::validation(format!("{field}: {message}")).with_field(field, message));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value =
        serde_path_to_error::deserialize(ObjectsOnly(&mut deserializer)).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let message = strip_position(&inner.to_string());
                    let field = field_of(&path, &message);
                    Problem::validation(format!("{field}: {message}")).with_field(field, message)
                }
                serde_json::error::Category::Eof | serde_json::error::Category::Syntax => {
                    Problem::bad_request(format!("The body is not valid JSON: {inner}"))
                }
                serde_json::error::Category::Io => Problem::bad_request(inner.to_string()),
            }
        })?;
    deserializer
        .end()
        .map_err(|err| Problem::bad_request(format!("Trailing data after the JSON body: {err}")))?;
    Ok(value)
}

/// A deserializer that reads the body's struct only from a JSON object. serde also reads a
/// struct from an array of its fields in order (`[null, null]` for `{a, b}`), which no OpenAPI
/// document describes; schemathesis found such a body accepted. (Only the outermost value:
/// structs inside it are read by serde_json itself.)
struct ObjectsOnly<D>(D);

macro_rules! forward {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: serde::de::Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.0.$method(visitor)
            }
        )*
    };
}

impl<'de, D: serde::Deserializer<'de>> serde::Deserializer<'de> for ObjectsOnly<D> {
    type Error = D::Error;

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: serde::de::Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// Where the first string (or object key) holding U+0000 is, if any: `None` quickly for the
/// usual body, since JSON can only spell NUL as the escape `\u0000`.
fn nul_field(bytes: &[u8]) -> Option<String> {
    if !has_nul_escape(bytes) {
        return None;
    }
    // Malformed JSON falls through: the parser reports it with its own problem.
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    fn walk(value: &serde_json::Value, path: &str) -> Option<String> {
        let join = |key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        match value {
            serde_json::Value::String(s) if s.contains('\0') => Some(if path.is_empty() {
                "body".into()
            } else {
                path.into()
            }),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, item)| walk(item, &format!("{path}[{i}]"))),
            serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
                if key.contains('\0') {
                    Some(join(&key.replace('\0', "\\u0000")))
                } else {
                    walk(item, &join(key))
                }
            }),
            _ => None,
        }
    }
    walk(&value, "")
}

/// Whether `bytes` hold the escape `\u0000` (a backslash that is not itself escaped).
fn has_nul_escape(bytes: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = bytes[from..].windows(6).position(|w| w == b"\\u0000") {
        let at = from + i;
        let backslashes = bytes[..at]
            .iter()
            .rev()
            .take_while(|b| **b == b'\\')
            .count();
        if backslashes % 2 == 0 {
            return true;
        }
        from = at + 1;
    }
    false
}

/// serde's messages end with "at line 1 column 42"; clients need the field, not the column.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The path of the field at fault. For a missing field the path is the parent's and the
/// field's own name is in the message.
fn field_of(path: &str, message: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let parent = if path == "." { "" } else { path };
    match named {
        // For an unknown field the path already ends with it.
        Some(name) if parent == name || parent.ends_with(&format!(".{name}")) => parent.to_owned(),
        Some(name) if parent.is_empty() => name.to_owned(),
        Some(name) => format!("{parent}.{name}"),
        None if parent.is_empty() => "body".to_owned(),
        None => parent.to_owned(),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

mod mime_type {
    /// The `type/subtype` of a content type, without parameters.
    pub struct Essence(String);

    impl std::str::FromStr for Essence {
        type Err = ();

        fn from_str(s: &str) -> Result<Self, ()> {
            let essence = s
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if essence.contains('/') {
                Ok(Self(essence))
            } else {
                Err(())
            }
        }
    }

    impl Essence {
        /// `application/json` or any `+json` type.
        pub fn is_json(&self) -> bool {
            self.0 == "application/json"
                || (self.0.starts_with("application/") && self.0.ends_with("+json"))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        variants: Vec<Variant>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Variant {
        sku: String,
        price: i64,
    }

    #[test]
    fn an_unknown_field_is_named_with_its_path() {
        let p = from_slice::<Body>(
            br#"{"name":"x","variants":[{"sku":"a","price":1,"colour":"red"}]}"#,
        )
        .unwrap_err();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "variants[0].colour");
        assert!(
            p.errors[0].message.starts_with("unknown field `colour`"),
            "{p:?}"
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let p = from_slice::<Body>(br#"{"variants":[]}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "name");
    }

    #[test]
    fn a_wrong_type_is_named_at_its_path() {
        let p = from_slice::<Body>(br#"{"name":"x","variants":[{"sku":"a","price":"1"}]}"#)
            .unwrap_err();
        assert_eq!(p.errors[0].field, "variants[0].price");
        assert!(!p.errors[0].message.contains("line"), "no positions: {p:?}");
    }

    #[test]
    fn a_nul_character_is_refused_naming_its_field() {
        let p = from_slice::<Body>(br#"{"name":"x","variants":[{"sku":"a\u0000b","price":1}]}"#)
            .unwrap_err();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "variants[0].sku");
        assert!(p.errors[0].message.contains("NUL"), "{p:?}");
        let p = from_slice::<serde_json::Value>(br#"{"a\u0000":1}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "a\\u0000");
        let p = from_slice::<serde_json::Value>(br#""\u0000""#).unwrap_err();
        assert_eq!(p.errors[0].field, "body");
        // An escaped backslash followed by the text `u0000` is no NUL.
        let v: serde_json::Value = from_slice(br#"{"name":"C:\\u0000"}"#).unwrap();
        assert_eq!(v["name"], "C:\\u0000");
    }

    #[test]
    fn a_struct_is_read_only_from_an_object_never_from_an_array_of_its_fields() {
        let p = from_slice::<Body>(br#"["x", []]"#).unwrap_err();
        assert_eq!(p.status, 422, "{p:?}");
        assert_eq!(p.errors[0].field, "body");
        let body: Body = from_slice(br#"{"name": "x", "variants": []}"#).unwrap();
        assert_eq!(body.name, "x");
        // A body that is an array by contract still is one.
        let list: Vec<String> = from_slice(br#"["a", "b"]"#).unwrap();
        assert_eq!(list, ["a", "b"]);
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        let p = from_slice::<Body>(br#"{"name": "#).unwrap_err();
        assert_eq!(p.status, 400);
        let p = from_slice::<Body>(br#"{"name":"x","variants":[]} trailing"#).unwrap_err();
        assert_eq!(p.status, 400);
    }
}
