//! Parse arbitrary bytes as a policy. Nothing may panic or overflow the stack.
//! Skipped inputs: none (invalid UTF-8 is part of the input space).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pest::set_call_limit(std::num::NonZeroUsize::new(5_000_000));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = yardmaster::policy::syntax::parse(0, text);
    }
});
