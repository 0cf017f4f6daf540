//! Durations as people write them: input `250ms`, `20s`, `5m`, `1h` (or a bare number of
//! milliseconds), output milliseconds.

/// Parses `250ms`, `20s`, `5m`, `1h` (or a bare number of milliseconds).
pub fn parse_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e3)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e3)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked finite and non-negative")]
    Some((v * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_ms("250ms"), Some(250));
        assert_eq!(parse_ms("20s"), Some(20_000));
        assert_eq!(parse_ms("5m"), Some(300_000));
        assert_eq!(parse_ms("1h"), Some(3_600_000));
        assert_eq!(parse_ms("1.5s"), Some(1_500));
        assert_eq!(parse_ms("300"), Some(300));
        assert_eq!(parse_ms("x"), None);
        assert_eq!(parse_ms("-1s"), None);
    }
}
