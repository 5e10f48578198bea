//! Writes the fixture of every contract that has none yet (`tests/contracts/<type>.v<version>.json`)
//! from the samples the contract tests use. An existing fixture is never rewritten: it is what
//! consumers already rely on, so a change to a published contract is a new version (a new
//! fixture), not an edit. Run it, review the new files, commit them:
//!
//!     cargo run -p tienda-events --example bless_contracts

#[path = "../tests/samples/mod.rs"]
mod samples;

use samples::Visit;
use tienda_events::Message;

#[derive(Default)]
struct Bless {
    written: Vec<String>,
    changed: Vec<String>,
}

impl Visit for Bless {
    fn check<T: Message + PartialEq + std::fmt::Debug>(&mut self, data: T) {
        let path = samples::fixture_path::<T>();
        let value = serde_json::to_value(samples::sample(data)).expect("a contract encodes");
        let text = serde_json::to_string_pretty(&value).expect("JSON prints") + "\n";
        match std::fs::read_to_string(&path) {
            Ok(existing)
                if serde_json::from_str::<serde_json::Value>(&existing).ok() == Some(value) => {}
            Ok(_) => self.changed.push(path.display().to_string()),
            Err(_) => {
                std::fs::write(&path, text)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
                self.written.push(path.display().to_string());
            }
        }
    }
}

fn main() {
    let mut bless = Bless::default();
    samples::all(&mut bless);
    for path in &bless.written {
        println!("wrote {path}");
    }
    if bless.written.is_empty() {
        println!("every contract has its fixture; nothing written");
    }
    if !bless.changed.is_empty() {
        eprintln!(
            "these published fixtures differ from the code and were left alone (a changed \
             contract needs a new VERSION, or a deliberate edit of the fixture):"
        );
        for path in &bless.changed {
            eprintln!("  {path}");
        }
        std::process::exit(1);
    }
}
