//! Validate a custom resource the way the API server would, without one: the CRD's OpenAPI
//! schema (strict about unknown fields, as `kubectl apply --validate=strict` is) and then its
//! CEL rules, after defaults are applied. `tienda up` uses it on the files it reads, tests on
//! the examples.

use std::{collections::BTreeMap, fmt, sync::OnceLock};

use kube::core::cel;
use serde_json::{Map, Value};

use crate::crd_yaml;

/// One reason an object is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where: a JSON path such as `spec.rules[0].burst` (empty for the whole object).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

struct Kind {
    /// The `openAPIV3Schema` as Kubernetes has it, for the CEL validator.
    openapi: Value,
    /// The same schema as strict JSON Schema, for structural validation.
    json_schema: jsonschema::Validator,
}

fn kinds() -> &'static BTreeMap<String, Kind> {
    static KINDS: OnceLock<BTreeMap<String, Kind>> = OnceLock::new();
    KINDS.get_or_init(|| {
        crd_yaml::crds()
            .into_iter()
            .map(|crd| {
                let version = &crd.spec.versions[0];
                let openapi = serde_json::to_value(
                    version
                        .schema
                        .as_ref()
                        .and_then(|s| s.open_api_v3_schema.as_ref())
                        .expect("every Tienda CRD has a schema"),
                )
                .expect("schema serializes");
                let mut root = to_strict_json_schema(&openapi);
                // The API server owns these three and they are not in a CRD's schema.
                let properties = root["properties"].as_object_mut().expect("root properties");
                properties.insert("apiVersion".into(), serde_json::json!({"type": "string"}));
                properties.insert("kind".into(), serde_json::json!({"type": "string"}));
                properties.insert("metadata".into(), serde_json::json!({"type": "object"}));
                let json_schema =
                    jsonschema::validator_for(&root).expect("a CRD schema is a valid JSON Schema");
                let key = format!(
                    "{}/{}/{}",
                    crd.spec.group, version.name, crd.spec.names.kind
                );
                (
                    key,
                    Kind {
                        openapi,
                        json_schema,
                    },
                )
            })
            .collect()
    })
}

/// Validates `object` (a whole resource with `apiVersion` and `kind`), and for an update the
/// transition rules against `old`.
pub fn validate(object: &Value, old: Option<&Value>) -> Result<(), Vec<Violation>> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind_name = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(kind) = kinds().get(&format!("{api_version}/{kind_name}")) else {
        return Err(vec![Violation {
            field: String::new(),
            message: format!(
                "unknown kind {kind_name:?} in {api_version:?}: Tienda serves Shop, Service, \
                 RateLimitPolicy and CircuitPolicy in tienda.dev/v1alpha1"
            ),
        }]);
    };

    let mut violations: Vec<Violation> = kind
        .json_schema
        .iter_errors(object)
        .map(|error| Violation {
            field: pointer_to_path(error.instance_path().as_str()),
            message: error.to_string(),
        })
        .collect();
    // CEL rules assume a structurally valid object, as the API server's do.
    if violations.is_empty()
        && let Err(errors) = cel::Validator::new().validate(&kind.openapi, object, old)
    {
        violations.extend(errors.into_vec().into_iter().map(|e| Violation {
            field: e.field_path.trim_start_matches('.').to_owned(),
            message: e.message,
        }));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// `/spec/rules/0/burst` → `spec.rules[0].burst`
fn pointer_to_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        if segment.chars().all(|c| c.is_ascii_digit()) && !segment.is_empty() {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment.replace("~1", "/").replace("~0", "~"));
        }
    }
    path
}

/// Turns a Kubernetes structural schema into JSON Schema with Kubernetes' semantics:
/// `nullable: true` admits null, and objects with declared properties reject unknown fields
/// (unless `x-kubernetes-preserve-unknown-fields`), as strict field validation does.
fn to_strict_json_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: Map<String, Value> = map
                .iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "properties" | "patternProperties" => match v {
                            Value::Object(props) => Value::Object(
                                props
                                    .iter()
                                    .map(|(name, s)| (name.clone(), to_strict_json_schema(s)))
                                    .collect(),
                            ),
                            other => other.clone(),
                        },
                        "items" | "additionalProperties" | "not" => to_strict_json_schema(v),
                        "allOf" | "anyOf" | "oneOf" => match v {
                            Value::Array(list) => {
                                Value::Array(list.iter().map(to_strict_json_schema).collect())
                            }
                            other => other.clone(),
                        },
                        _ => v.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            let preserve =
                map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && !preserve
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            if map.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(ty)) = map.get("type")
            {
                out.insert(
                    "type".into(),
                    Value::Array(vec![ty.clone().into(), "null".into()]),
                );
                if let Some(Value::Array(values)) = out.get_mut("enum") {
                    values.push(Value::Null);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointers_read_as_field_paths() {
        assert_eq!(
            pointer_to_path("/spec/rules/0/burst"),
            "spec.rules[0].burst"
        );
        assert_eq!(pointer_to_path(""), "");
    }
}
