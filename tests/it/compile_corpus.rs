//! The compiler's corpus: every `tests/compile/*.route` is compiled against the quickstart
//! catalog, and its program (the compiled conditions, flat and labelled, and the facts about the
//! program: keywords, regexes, what it reads, its catch-all) is snapshotted.

#[test]
fn every_program_compiles_to_its_snapshot() {
    insta::glob!("../compile", "*.route", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let program = crate::common::program_named(&name, &text);
        insta::assert_debug_snapshot!(program);
    });
}
