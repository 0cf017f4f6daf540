//! The compiler's corpus: every `tests/compile/*.route` is compiled against the quickstart
//! catalog, and its program (the compiled conditions, flat and labelled, and the facts about the
//! program: keywords, regexes, what it reads, its catch-all) is snapshotted.

#[test]
fn every_program_compiles_to_its_snapshot() {
    let catalog = crate::common::quickstart();
    insta::glob!("../compile", "*.route", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let source = yardmaster::policy::load::load_text(std::path::Path::new(&name), &text);
        let (program, diags, sources) = yardmaster::policy::build_from(source, Some(&catalog));
        let program = program.unwrap_or_else(|| {
            panic!(
                "{name} does not compile:\n{}",
                diags.iter().map(|d| d.one_line(&sources)).collect::<Vec<_>>().join("\n")
            )
        });
        insta::assert_debug_snapshot!(program);
    });
}
