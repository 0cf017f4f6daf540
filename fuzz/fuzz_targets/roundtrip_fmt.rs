//! Format any policy that parses: formatting must succeed (the formatter checks itself) and be
//! idempotent. Skipped inputs: text that does not parse (nothing to format).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pest::set_call_limit(std::num::NonZeroUsize::new(5_000_000));
    let Ok(text) = std::str::from_utf8(data) else { return };
    if yardmaster::policy::syntax::parse(0, text).is_err() {
        return;
    }
    match yardmaster::policy::fmt::format_source(text) {
        Ok(once) => {
            let twice = yardmaster::policy::fmt::format_source(&once).expect("formatted output formats again");
            assert_eq!(once, twice, "formatting is not idempotent");
        }
        Err(yardmaster::policy::fmt::FmtError::Parse(_)) => {}
        Err(e) => panic!("{e}"),
    }
});
