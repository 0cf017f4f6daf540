//! A decision that reads no token count allocates nothing on the heap: the automaton, the regex
//! set and the scratch buffers are reused, and the decision refers to the compiled rule instead of
//! copying it. (This binary holds one test, so no other test allocates while it counts.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

#[path = "it/common.rs"]
mod common;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn decisions_do_not_allocate() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/main.route")).unwrap();
    let program = common::program(&text);
    let health = yardmaster::policy::eval::StaticHealth::default();
    let ctx = yardmaster::policy::eval::Context {
        tier: Some("free"),
        key_name: Some("k"),
        ..yardmaster::policy::eval::Context::anonymous(&health)
    };
    let prompts = [
        format!("{}\nTraceback (most recent call last):", "lorem ipsum dolor sit amet ".repeat(40)),
        "a plain question about the weather ".repeat(30),
        format!("```rust\n{}\n```", "let x = 1;\n".repeat(90)),
    ];
    let reqs: Vec<_> =
        prompts.iter().map(|p| yardmaster::policy::eval::RequestFacts::from_chat(&common::chat(p)).unwrap()).collect();
    let mut scratch = yardmaster::policy::eval::Scratch::default();
    let mut expected = Vec::new();
    for r in &reqs {
        expected.push(program.decide(r, &ctx, &mut scratch).rule);
    }
    let mut got = Vec::with_capacity(300);
    let region = Region::new(GLOBAL);
    for _ in 0..100 {
        for r in &reqs {
            got.push(program.decide(r, &ctx, &mut scratch));
        }
    }
    let stats = region.change();
    assert_eq!(stats.allocations, 0, "decisions allocated: {stats:?}");
    assert!(got.iter().all(|d| d.tokens.is_none()), "these decisions must not count tokens");
    let names: Vec<&str> = expected.iter().map(|i| program.rule(*i).unwrap().name.as_str()).collect();
    assert_eq!(names, ["code", "free tier experiment", "code"]);
    assert_eq!(got.iter().take(3).map(|d| d.rule).collect::<Vec<_>>(), expected);
}
