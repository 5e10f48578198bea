//! Nothing but a home for `tests/evaluate.rs`, which evaluates the repository's Tiltfile as
//! Starlark with Tilt's builtins stood in for and checks every file and object it names.
