//! The formatter's corpus: every `tests/fmt/*.route` formats to its snapshot, formatting the
//! result changes nothing, and the formatted policy means the same (the formatter checks that
//! itself, and would answer an internal error otherwise).

#[test]
fn every_file_formats_to_its_snapshot_and_formatting_is_idempotent() {
    insta::glob!("../fmt", "*.route", |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let once = yardmaster::policy::fmt::format_source(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let twice = yardmaster::policy::fmt::format_source(&once).unwrap();
        assert_eq!(once, twice, "{}: formatting twice changed it", path.display());
        let comments = |t: &str| t.lines().filter(|l| l.contains('#')).count();
        assert_eq!(comments(&once), comments(&text), "{}: a comment was lost", path.display());
        insta::assert_snapshot!(once);
    });
}
