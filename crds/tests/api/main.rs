//! Tests of the Tienda API: the committed CRD YAML, the CEL rules, the examples.

mod cel_rules;
mod crd_yaml;
mod examples;
mod support;
