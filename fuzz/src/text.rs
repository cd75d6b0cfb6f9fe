//! `shared::time::UnixMillis::parse_rfc3339` and `shared::number::PhoneNumber::parse`.

use shared::dtmf::Digit;
use shared::limits::E164_MAX_DIGITS;
use shared::number::PhoneNumber;
use shared::time::UnixMillis;

/// `0000-01-01T00:00:00.000Z` and `9999-12-31T23:59:59.999Z`: what four-digit years cover.
const FIRST_MS: i64 = -62_167_219_200_000;
const LAST_MS: i64 = 253_402_300_799_999;

fn written(t: UnixMillis) -> String {
    let mut s = String::new();
    t.write_rfc3339(&mut s).expect("String never fails");
    s
}

/// Parses `data` as RFC 3339; a parsed instant written back reads as the same instant. Then
/// writes an instant taken from the first 8 bytes and reads it back.
pub fn check_rfc3339(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = UnixMillis::parse_rfc3339(s) {
            if (FIRST_MS..=LAST_MS).contains(&t.0) {
                let w = written(t);
                assert_eq!(w.len(), 24, "{w}");
                assert_eq!(
                    UnixMillis::parse_rfc3339(&w),
                    Ok(t),
                    "{s:?} → {} → {w}",
                    t.0
                );
            }
        }
    }
    if let Some(b) = data.get(..8) {
        let raw = i64::from_le_bytes(b.try_into().expect("8 bytes"));
        let t = UnixMillis(FIRST_MS + raw.rem_euclid(LAST_MS - FIRST_MS + 1));
        let w = written(t);
        assert_eq!(UnixMillis::parse_rfc3339(&w), Ok(t), "{} → {w}", t.0);
    } else if let Some(&b) = data.first() {
        // Extreme values must not panic when written.
        let t = UnixMillis(if b & 1 == 0 { i64::MIN } else { i64::MAX });
        let _ = written(t);
    }
}

/// Parses `data` as a phone number; a parsed number is E.164-shaped, prints as `+digits`,
/// reads back equal, and masks without panicking.
pub fn check_phone_number(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(n) = PhoneNumber::parse(s) else {
        return;
    };
    let d = n.digits();
    assert!(!d.is_empty() && d.len() <= E164_MAX_DIGITS, "{d}");
    assert!(d.bytes().all(|b| b.is_ascii_digit()), "{d}");
    assert!(!d.starts_with('0'));
    let shown = n.to_string();
    assert_eq!(shown, format!("+{d}"));
    assert_eq!(PhoneNumber::parse(&shown).as_ref(), Ok(&n));
    assert_eq!(PhoneNumber::parse(d).as_ref(), Ok(&n));
    let keys: Vec<Digit> = d
        .chars()
        .map(|c| Digit::from_char(c).expect("a decimal digit"))
        .collect();
    assert_eq!(PhoneNumber::from_keys(&keys).as_ref(), Ok(&n));
    assert!(n.has_prefix(d) && n.has_prefix(&shown));
    for k in 0..=d.len() + 1 {
        let tail = n.last_digits(k);
        assert!(d.ends_with(tail) && tail.len() == k.min(d.len()));
    }
    let masked = n.masked().to_string();
    let debug = format!("{n:?}");
    if d.len() > 8 {
        // Logs never show the whole number.
        assert!(!masked.contains(d), "{masked}");
        assert!(!debug.contains(d), "{debug}");
    }
}
