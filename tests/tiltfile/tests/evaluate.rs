//! The Tiltfile evaluated as Starlark with stand-ins for Tilt's builtins that record each call,
//! so a syntax error, a wrong call or a reference to a missing file fails here rather than on a
//! developer's first `tilt up`.

use std::{cell::RefCell, collections::HashMap};

use starlark::{
    collections::SmallMap,
    environment::{FrozenModule, Globals, GlobalsBuilder, Module},
    eval::{Evaluator, FileLoader},
    starlark_module,
    syntax::{AstModule, Dialect},
    values::{Value, list::ListRef, none::NoneType, tuple::TupleRef, tuple::UnpackTuple},
};

use serde_json::Value as Json;

/// The repository's root.
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn documents(yaml: &str) -> Vec<Json> {
    serde_saphyr::from_multiple::<Json>(yaml)
        .expect("valid YAML")
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// `helm template` of the chart as the Tiltfile installs it.
fn render(extra: &[&str]) -> String {
    let helm = std::env::var("HELM").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tienda/tools/helm/helm",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let mut args = vec![
        "template",
        "tienda",
        "charts/tienda",
        "--namespace",
        "tienda-system",
    ];
    args.extend_from_slice(extra);
    let out = std::process::Command::new(&helm)
        .args(&args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!("{helm}: {e}; run tests/run (tests/tools/install installs helm)")
        });
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One call of a Tilt builtin: its name, positional and keyword arguments as strings.
#[derive(Debug, Clone)]
struct Call {
    name: &'static str,
    args: Vec<Vec<String>>,
    kwargs: HashMap<String, Vec<String>>,
}

thread_local! {
    static CALLS: RefCell<Vec<Call>> = const { RefCell::new(Vec::new()) };
}

fn strings(v: Value) -> Vec<String> {
    if let Some(s) = v.unpack_str() {
        return vec![s.to_owned()];
    }
    if let Some(list) = ListRef::from_value(v) {
        return list.iter().flat_map(strings).collect();
    }
    if let Some(tuple) = TupleRef::from_value(v) {
        return tuple.iter().flat_map(strings).collect();
    }
    vec![v.to_repr()]
}

fn record(name: &'static str, args: &UnpackTuple<Value>, kwargs: &SmallMap<String, Value>) {
    let call = Call {
        name,
        args: args.items.iter().map(|v| strings(*v)).collect(),
        kwargs: kwargs
            .iter()
            .map(|(k, v)| (k.clone(), strings(*v)))
            .collect(),
    };
    CALLS.with(|c| c.borrow_mut().push(call));
}

#[starlark_module]
fn tilt(builder: &mut GlobalsBuilder) {
    fn allow_k8s_contexts<'v>(
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
    ) -> anyhow::Result<NoneType> {
        record("allow_k8s_contexts", &args, &kwargs);
        Ok(NoneType)
    }

    fn local_resource<'v>(
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
    ) -> anyhow::Result<NoneType> {
        record("local_resource", &args, &kwargs);
        Ok(NoneType)
    }

    fn docker_build<'v>(
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
    ) -> anyhow::Result<NoneType> {
        record("docker_build", &args, &kwargs);
        Ok(NoneType)
    }

    fn sync<'v>(
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
    ) -> anyhow::Result<String> {
        record("sync", &args, &kwargs);
        Ok(format!("sync:{}", args.items.len()))
    }

    fn helm<'v>(
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
    ) -> anyhow::Result<String> {
        record("helm", &args, &kwargs);
        Ok("<helm output>".to_owned())
    }

    fn k8s_yaml<'v>(
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
    ) -> anyhow::Result<NoneType> {
        record("k8s_yaml", &args, &kwargs);
        Ok(NoneType)
    }

    fn k8s_resource<'v>(
        #[starlark(args)] args: UnpackTuple<Value<'v>>,
        #[starlark(kwargs)] kwargs: SmallMap<String, Value<'v>>,
    ) -> anyhow::Result<NoneType> {
        record("k8s_resource", &args, &kwargs);
        Ok(NoneType)
    }
}

/// Tilt's `restart_process` extension as the Tiltfile loads it: a `docker_build` that also
/// takes the `entrypoint` to restart.
const RESTART_PROCESS: &str = "
def docker_build_with_restart(ref, context, entrypoint, **kwargs):
    if not entrypoint:
        fail('docker_build_with_restart needs an entrypoint')
    docker_build(ref, context, **kwargs)
";

struct Extensions(HashMap<String, FrozenModule>);

impl FileLoader for Extensions {
    fn load(&self, path: &str) -> starlark::Result<FrozenModule> {
        self.0.get(path).cloned().ok_or_else(|| {
            starlark::Error::new_other(anyhow::anyhow!("unknown Tilt extension {path}"))
        })
    }
}

fn dialect() -> Dialect {
    Dialect {
        enable_top_level_stmt: true,
        ..Dialect::Standard
    }
}

fn evaluate(source: &str, globals: &Globals) -> Vec<Call> {
    CALLS.with(|c| c.borrow_mut().clear());
    let ext = Module::with_temp_heap(|module| {
        let ast = AstModule::parse("restart_process", RESTART_PROCESS.to_owned(), &dialect())
            .expect("the extension parses");
        Evaluator::new(&module)
            .eval_module(ast, globals)
            .expect("the extension evaluates");
        module.freeze().expect("freezes")
    });
    let loader = Extensions(HashMap::from([("ext://restart_process".to_owned(), ext)]));
    Module::with_temp_heap(|module| {
        let ast = AstModule::parse("Tiltfile", source.to_owned(), &dialect())
            .unwrap_or_else(|e| panic!("the Tiltfile does not parse: {e}"));
        let mut eval = Evaluator::new(&module);
        eval.set_loader(&loader);
        if let Err(e) = eval.eval_module(ast, globals) {
            panic!("the Tiltfile fails: {e}");
        }
    });
    CALLS.with(|c| c.borrow().clone())
}

#[test]
fn the_tiltfile_evaluates_and_every_file_it_names_exists() {
    let globals = GlobalsBuilder::standard().with(tilt).build();
    let source = std::fs::read_to_string(root().join("Tiltfile")).unwrap();
    let calls = evaluate(&source, &globals);
    let named = |name: &'static str| calls.iter().filter(move |c| c.name == name);

    // The chart, installed with its dev infrastructure.
    let helm = named("helm").next().expect("the chart is installed");
    assert!(root().join(&helm.args[0][0]).join("Chart.yaml").is_file());
    let set = &helm.kwargs["set"];
    assert!(set.contains(&"devInfra.enabled=true".to_owned()), "{set:?}");
    let mut rendered_args = Vec::new();
    for s in set {
        rendered_args.push("--set");
        rendered_args.push(s.as_str());
    }
    let rendered = documents(&render(&rendered_args));

    // The Shop and policies applied, and the objects k8s_resource names exist.
    let applied: Vec<String> = named("k8s_yaml")
        .flat_map(|c| c.args[0].clone())
        .filter(|p| p != "<helm output>")
        .collect();
    assert!(!applied.is_empty());
    let mut objects = Vec::new();
    for path in &applied {
        let text =
            std::fs::read_to_string(root().join(path)).unwrap_or_else(|_| panic!("{path} exists"));
        // Their schemas and CEL rules are checked with every other example (tests/delivery).
        for doc in documents(&text) {
            assert_eq!(doc["apiVersion"], "tienda.dev/v1alpha1", "{path}");
            objects.push(format!(
                "{}:{}",
                doc["metadata"]["name"].as_str().unwrap(),
                doc["kind"].as_str().unwrap().to_lowercase()
            ));
        }
    }
    for call in named("k8s_resource") {
        if let Some(selected) = call.kwargs.get("objects") {
            for o in selected {
                assert!(
                    objects.contains(o),
                    "k8s_resource selects {o}, which is applied: {objects:?}"
                );
            }
        } else {
            let workload = &call.args[0][0];
            assert!(
                rendered
                    .iter()
                    .any(|d| d["metadata"]["name"] == workload.as_str()
                        && matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet"))),
                "k8s_resource {workload} is a workload of the chart"
            );
        }
    }

    // Images: contexts exist; the operator's binary is synced into its running pod.
    let images: Vec<&Call> = named("docker_build").collect();
    assert!(
        images
            .iter()
            .any(|c| c.args[0][0].ends_with("/tienda-operator"))
    );
    for image in &images {
        assert!(root().join(&image.args[1][0]).is_dir(), "{image:?}");
        assert!(image.kwargs.contains_key("live_update"), "{image:?}");
    }
    let sources: Vec<String> = named("sync").map(|c| c.args[0][0].clone()).collect();
    assert!(
        sources.iter().any(|s| s == "target/release/tienda"),
        "{sources:?}"
    );

    // Local resources: their dependencies exist (build outputs excepted).
    for call in named("local_resource") {
        for dep in call.kwargs.get("deps").into_iter().flatten() {
            assert!(
                dep.starts_with("target/") || root().join(dep).exists(),
                "{}: {dep} exists",
                call.args[0][0]
            );
        }
    }
    assert!(
        named("local_resource").any(|c| c
            .kwargs
            .get("serve_cmd")
            .is_some_and(|s| s[0].contains("3000:8080"))),
        "the gateway is forwarded to :3000"
    );
}

#[test]
fn a_broken_tiltfile_fails_the_evaluation() {
    let globals = GlobalsBuilder::standard().with(tilt).build();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        evaluate("k8s_yaml(undefined_name)\n", &globals)
    }));
    assert!(result.is_err(), "an unknown name is an error");
}
