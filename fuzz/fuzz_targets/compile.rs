//! Load, check and compile arbitrary text against the quickstart catalog, then decide one request.
//! Nothing may panic. Skipped inputs: invalid UTF-8 (covered by `parse` through the loader).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

use yardmaster::policy::eval::{Context, RequestFacts, StaticHealth};

fn catalog() -> &'static yardmaster::catalog::Catalog {
    static C: OnceLock<yardmaster::catalog::Catalog> = OnceLock::new();
    C.get_or_init(|| {
        let text = include_str!("../../examples/quickstart.yaml");
        yardmaster::config::parse(Path::new("q.yaml"), text).expect("quickstart loads").catalog()
    })
}

fuzz_target!(|data: &[u8]| {
    pest::set_call_limit(std::num::NonZeroUsize::new(5_000_000));
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = yardmaster::policy::load::load_text(Path::new("fuzz.route"), text);
    let (program, _, _) = yardmaster::policy::build_from(source, Some(catalog()));
    if let Some(p) = program {
        let req = RequestFacts::from_chat(&serde_json_value()).expect("valid body");
        let health = StaticHealth::default();
        let ctx = Context::anonymous(&health);
        let _ = p.explain(&req, &ctx);
    }
});

fn serde_json_value() -> yardmaster_json::Value {
    yardmaster_json::json!({"model": "auto", "messages": [{"role": "user", "content": "def main(): SELECT AKIA"}]})
}

use yardmaster::json as yardmaster_json;
