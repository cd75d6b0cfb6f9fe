//! Property checks behind ccedge's fuzz targets.
//!
//! Every `fuzz_targets/<name>.rs` is one line that hands libFuzzer's input to a function here,
//! so the checks can also be called from unit tests and from the seed replay in `cargo test`
//! (see `tests` at the bottom). Each check panics (and so makes libFuzzer report a crash) when
//! the code under test panics or when a property beyond "no panic" fails.
#![forbid(unsafe_code)]

pub mod call;
pub mod dtmf;
pub mod edge;
pub mod rtp;
pub mod sdp;
pub mod sip;
pub mod text;

/// `true` when `part` is a sub-slice of `whole` (same memory), i.e. the parser borrowed it from
/// the input instead of inventing it. Empty slices count as inside.
#[must_use]
pub fn within(whole: &[u8], part: &[u8]) -> bool {
    if part.is_empty() {
        return true;
    }
    let start = whole.as_ptr() as usize;
    let end = start + whole.len();
    let p = part.as_ptr() as usize;
    p >= start && p + part.len() <= end
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    /// Replays every committed seed through its target's check, so `cargo test` in `fuzz/`
    /// catches a seed that no longer passes without needing libFuzzer.
    fn replay(target: &str, check: fn(&[u8])) {
        replay_dir("seeds", target, check);
    }

    fn replay_dir(kind: &str, target: &str, check: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(kind)
            .join(target);
        let mut n = 0;
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            let data = fs::read(&path).expect("seed readable");
            eprintln!("{target}: {}", path.display());
            check(&data);
            n += 1;
        }
        assert!(n > 0, "no seeds for {target}");
    }

    #[test]
    fn seeds_pass() {
        replay("sip", crate::sip::check);
        replay("sdp", crate::sdp::check);
        replay("rtp", crate::rtp::check);
        replay("telephone_event", crate::rtp::check_telephone_event);
        replay("crm_input", crate::edge::check_crm_input);
        replay("control_request", crate::edge::check_control_request);
        replay("rfc4733", crate::dtmf::check_rfc4733_bytes);
        replay("goertzel", crate::dtmf::check_goertzel);
        replay("rfc3339", crate::text::check_rfc3339);
        replay("phone_number", crate::text::check_phone_number);
        replay("call_sequence", crate::call::check_bytes);
    }

    /// Inputs that made a target fail once and whose cause is fixed (fuzz/README.md,
    /// Findings): each must keep passing.
    #[test]
    fn fixed_regressions_pass() {
        replay_dir("regressions", "sdp", crate::sdp::check);
        replay_dir("regressions", "call_sequence", crate::call::check_bytes);
    }

    #[test]
    fn within_is_about_memory_not_content() {
        let a = b"abcabc";
        assert!(crate::within(a, &a[3..]));
        let b = *b"abc";
        assert!(!crate::within(a, &b));
    }
}
