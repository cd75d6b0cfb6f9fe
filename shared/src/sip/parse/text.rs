//! Value-level grammar: LWS, quoted strings, comma lists, name-addr, parameters, Via, CSeq.
//!
//! Everything here works on a header value that the line scanner has already cut out of the
//! datagram (a `&str` that may still contain folds, i.e. CRLF followed by SP/HT). Every
//! function skips LWS — including folds — between tokens, so callers never see a fold unless
//! they look at a raw value. Nothing allocates; all results borrow from the input.

use core::fmt;

/// SP, HT, CR or LF: the bytes linear white space (LWS) is made of, folds included.
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// `true` if `s` is a non-empty RFC 3261 token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Trims LWS (spaces, tabs and folds) from both ends of a header value.
#[must_use]
pub fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_lws(c as u8))
}

/// Index of the first non-LWS byte at or after `i` (or `s.len()`).
fn skip_lws(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_lws(b)) {
        i += 1;
    }
    i
}

/// Index of the first byte at or after `i` that is not a token character.
fn token_end(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_token_char(b)) {
        i += 1;
    }
    i
}

/// Given `s[open] == '"'`, the index just past the closing quote; `None` if unterminated.
/// A backslash escapes the next byte (RFC 3261 `quoted-pair`).
fn quoted_end(s: &[u8], open: usize) -> Option<usize> {
    let mut i = open.checked_add(1)?;
    loop {
        match *s.get(i)? {
            b'\\' => i = i.checked_add(2)?,
            b'"' => return i.checked_add(1),
            _ => i += 1,
        }
    }
}

/// A header value shown with every fold (and any LWS run around it) as one space.
///
/// Folded values cannot be returned as one contiguous `&str` without copying; this wrapper
/// prints them as if they had been unfolded: `Unfolded(v).to_string()` (with `std`) or
/// `write!(buf, "{}", Unfolded(v))` into a heapless string.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Unfolded<'a>(pub &'a str);

impl fmt::Display for Unfolded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = trim_lws(self.0);
        let b = s.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < b.len() {
            if b.get(i) == Some(&b'\r') || b.get(i) == Some(&b'\n') {
                // Extend to the whole LWS run around the line break.
                let mut run_start = i;
                while run_start > start && b.get(run_start - 1).is_some_and(|&c| is_lws(c)) {
                    run_start -= 1;
                }
                let run_end = skip_lws(b, i);
                f.write_str(s.get(start..run_start).unwrap_or(""))?;
                f.write_str(" ")?;
                start = run_end;
                i = run_end;
            } else {
                i += 1;
            }
        }
        f.write_str(s.get(start..).unwrap_or(""))
    }
}

/// Iterator over the comma-separated elements of a list header value (Via, Contact, Require,
/// Supported, Allow …), each trimmed of LWS.
///
/// Commas inside quoted strings and inside `<…>` do not split. Empty elements (`a,,b`) are
/// yielded as `""` so a strict caller can reject them. Made by [`split_list`].
#[derive(Clone, Debug)]
pub struct ListValues<'a> {
    rest: Option<&'a str>,
}

/// Splits a list header value at its top-level commas; see [`ListValues`].
#[must_use]
pub fn split_list(value: &str) -> ListValues<'_> {
    let v = trim_lws(value);
    ListValues {
        rest: if v.is_empty() { None } else { Some(v) },
    }
}

impl<'a> Iterator for ListValues<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let b = s.as_bytes();
        let mut i = 0;
        let mut in_angle = false;
        while let Some(&c) = b.get(i) {
            match c {
                b'"' if !in_angle => match quoted_end(b, i) {
                    Some(e) => i = e,
                    None => break, // unbalanced quote: the rest is one element
                },
                b'<' => {
                    in_angle = true;
                    i += 1;
                }
                b'>' => {
                    in_angle = false;
                    i += 1;
                }
                b',' if !in_angle => {
                    self.rest = s.get(i + 1..);
                    return Some(trim_lws(s.get(..i).unwrap_or("")));
                }
                _ => i += 1,
            }
        }
        self.rest = None;
        Some(trim_lws(s))
    }
}

/// The `;name[=value]` parameters after a URI or a Via sent-by, as a borrowed span.
///
/// Names are matched case-insensitively. Values are returned raw: a quoted value keeps its
/// quotes (and escapes); LWS around `=` and `;` is skipped.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Params<'a>(&'a str);

/// One parameter: its name and, if it has `=value`, the value.
pub type Param<'a> = (&'a str, Option<&'a str>);

impl<'a> Params<'a> {
    /// Wraps a raw parameter span (from its first `;`; LWS around it is fine).
    #[must_use]
    pub fn new(span: &'a str) -> Params<'a> {
        Params(span)
    }

    /// The raw parameter span (starting at the first `;`, or empty).
    #[must_use]
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// The value of parameter `name`: `Some("")` for a parameter without a value, `None` if
    /// absent (or if the list is malformed before it).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter()
            .map_while(Result::ok)
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.unwrap_or(""))
    }

    /// `true` if every parameter is well formed: a non-empty token name, and after `=` a
    /// non-empty value.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        self.iter().all(|p| p.is_ok())
    }

    /// Iterates over the parameters; yields `Err(())` once and stops at the first malformed
    /// one.
    #[must_use]
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter {
            s: self.0,
            pos: 0,
            done: false,
        }
    }
}

/// Iterator over [`Params`]; see [`Params::iter`].
#[derive(Clone, Debug)]
pub struct ParamIter<'a> {
    s: &'a str,
    pos: usize,
    done: bool,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Result<Param<'a>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let b = self.s.as_bytes();
        let mut i = skip_lws(b, self.pos);
        if i >= b.len() {
            self.done = true;
            return None;
        }
        let fail = |this: &mut Self| {
            this.done = true;
            Some(Err(()))
        };
        if b.get(i) != Some(&b';') {
            return fail(self);
        }
        i = skip_lws(b, i + 1);
        let name_start = i;
        i = token_end(b, i);
        let Some(name) = self.s.get(name_start..i).filter(|n| !n.is_empty()) else {
            return fail(self);
        };
        let after_name = skip_lws(b, i);
        let mut value = None;
        if b.get(after_name) == Some(&b'=') {
            let v_start = skip_lws(b, after_name + 1);
            let v_end = if b.get(v_start) == Some(&b'"') {
                match quoted_end(b, v_start) {
                    Some(e) => e,
                    None => return fail(self),
                }
            } else {
                let mut e = v_start;
                while b
                    .get(e)
                    .is_some_and(|&c| !is_lws(c) && c != b';' && c != b',')
                {
                    e += 1;
                }
                e
            };
            match self.s.get(v_start..v_end).filter(|v| !v.is_empty()) {
                Some(v) => value = Some(v),
                None => return fail(self),
            }
            i = v_end;
        }
        self.pos = i;
        Some(Ok((name, value)))
    }
}

/// `true` if `uri` starts with a URI scheme followed by `:` and has no whitespace, `<`, `>`,
/// `"` or control characters — the shape check applied to the Request-URI and to URIs in
/// name-addr values (the URI's inner syntax is left to the layer that uses it).
#[must_use]
pub fn is_plausible_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let mut sb = scheme.bytes();
    sb.next().is_some_and(|c| c.is_ascii_alphabetic())
        && sb.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|c| c > 0x20 && c != 0x7f && !matches!(c, b'<' | b'>' | b'"'))
}

/// The URI scheme (`sip`, `sips`, `tel` …), as written.
#[must_use]
pub fn uri_scheme(uri: &str) -> Option<&str> {
    uri.split_once(':').map(|(s, _)| s)
}

/// The user part of a `sip:`/`sips:` URI, still %-escaped: between the scheme and the first
/// `:` (password) or `@`. `None` if the URI has no user part.
#[must_use]
pub fn uri_user(uri: &str) -> Option<&str> {
    let (_, rest) = uri.split_once(':')?;
    let (userinfo, _) = rest.split_once('@')?;
    Some(userinfo.split_once(':').map_or(userinfo, |(u, _)| u))
}

/// A From/To/Contact style value: `[display-name] <uri> *(;param)` or `uri *(;param)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written (quoted strings keep their quotes), if any.
    pub display_name: Option<&'a str>,
    /// The URI, without `<>` and without the header parameters.
    pub uri: &'a str,
    /// The header parameters after the URI (`;tag=…`).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses a name-addr or addr-spec value. Tolerated: an unquoted display name with any
    /// characters (`Bell, Alexander <sip:…>`), no space before `<`, LWS inside `<…>`.
    /// Rejected (`None`): an unterminated quoted string or `<`, a URI that is not
    /// [plausible](is_plausible_uri), an addr-spec containing `?` or `,` (RFC 3261 20.10
    /// requires `<…>` then), malformed parameters, or text after `>` that is not a parameter.
    #[must_use]
    pub fn parse(value: &'a str) -> Option<NameAddr<'a>> {
        let s = trim_lws(value);
        let b = s.as_bytes();
        let (display_name, lt) = if b.first() == Some(&b'"') {
            let q = quoted_end(b, 0)?;
            let lt = skip_lws(b, q);
            if b.get(lt) != Some(&b'<') {
                return None;
            }
            (s.get(..q), Some(lt))
        } else {
            match b.iter().position(|&c| c == b'<') {
                Some(lt) => {
                    let name = trim_lws(s.get(..lt)?);
                    ((!name.is_empty()).then_some(name), Some(lt))
                }
                None => (None, None),
            }
        };
        let (uri, params) = match lt {
            Some(lt) => {
                let gt = lt + 1 + b.get(lt + 1..)?.iter().position(|&c| c == b'>')?;
                (trim_lws(s.get(lt + 1..gt)?), s.get(gt + 1..)?)
            }
            None => {
                let semi = b.iter().position(|&c| c == b';').unwrap_or(b.len());
                let uri = trim_lws(s.get(..semi)?);
                if uri.contains(['?', ',']) {
                    return None;
                }
                (uri, s.get(semi..)?)
            }
        };
        let params = Params(params);
        (is_plausible_uri(uri) && params.is_valid()).then_some(NameAddr {
            display_name,
            uri,
            params,
        })
    }

    /// The `tag` parameter.
    #[must_use]
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag")
    }
}

/// One Via value: `SIP/2.0/UDP host[:port] *(;param)`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// The transport token (`UDP`, `TCP`, `TLS`, or any other token).
    pub transport: &'a str,
    /// `host[:port]` as written.
    pub sent_by: &'a str,
    /// The Via parameters (`branch`, `received`, `rport` …).
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    /// Parses one Via value (one element of a comma list). LWS is allowed around the `/`s,
    /// the port's `:` and the parameters. Rejects a protocol other than `SIP/2.0`, a missing
    /// host, and malformed parameters (`;;`).
    #[must_use]
    pub fn parse(value: &'a str) -> Option<Via<'a>> {
        let s = trim_lws(value);
        let b = s.as_bytes();
        let mut i = 0;
        let mut parts = [""; 3];
        for (n, part) in parts.iter_mut().enumerate() {
            if n > 0 {
                i = skip_lws(b, i);
                if b.get(i) != Some(&b'/') {
                    return None;
                }
                i = skip_lws(b, i + 1);
            }
            let e = token_end(b, i);
            *part = s.get(i..e).filter(|t| !t.is_empty())?;
            i = e;
        }
        let [name, version, transport] = parts;
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" {
            return None;
        }
        let host_start = skip_lws(b, i);
        if host_start == i {
            return None; // LWS is required between protocol and sent-by
        }
        let mut e = if b.get(host_start) == Some(&b'[') {
            host_start + 1 + b.get(host_start..)?.iter().position(|&c| c == b']')?
        } else {
            let mut e = host_start;
            while b
                .get(e)
                .is_some_and(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
            {
                e += 1;
            }
            if e == host_start {
                return None;
            }
            e
        };
        let colon = skip_lws(b, e);
        if b.get(colon) == Some(&b':') {
            let p = skip_lws(b, colon + 1);
            let pe = {
                let mut pe = p;
                while b.get(pe).is_some_and(u8::is_ascii_digit) {
                    pe += 1;
                }
                pe
            };
            if pe == p {
                return None;
            }
            e = pe;
        }
        let sent_by = s.get(host_start..e)?;
        let params = Params(s.get(e..)?);
        params.is_valid().then_some(Via {
            transport,
            sent_by,
            params,
        })
    }

    /// The `branch` parameter.
    #[must_use]
    pub fn branch(&self) -> Option<&'a str> {
        self.params.get("branch")
    }
}

/// A CSeq value: sequence number and method token.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number (leading zeros allowed; must fit a `u32`).
    pub number: u32,
    /// The method token as written.
    pub method: &'a str,
}

impl<'a> CSeq<'a> {
    /// Parses `1*DIGIT LWS method`; `None` if the number does not fit a `u32`, the method is
    /// not a token, or anything follows it.
    #[must_use]
    pub fn parse(value: &'a str) -> Option<CSeq<'a>> {
        let s = trim_lws(value);
        let b = s.as_bytes();
        let digits = b
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(b.len());
        let number = parse_u32(s.get(..digits)?)?;
        let m_start = skip_lws(b, digits);
        if m_start == digits {
            return None;
        }
        let method = s.get(m_start..)?;
        is_token(method).then_some(CSeq { number, method })
    }
}

/// Parses `1*DIGIT` (leading zeros allowed) into a `u32`; `None` on overflow or non-digits.
pub(crate) fn parse_u32(s: &str) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0u32, |acc, c| {
        let d = c.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u32::from(d))
    })
}

/// Parses `1*DIGIT` into a `usize`; `None` on overflow or non-digits.
pub(crate) fn parse_usize(s: &str) -> Option<usize> {
    if s.is_empty() {
        return None;
    }
    s.bytes().try_fold(0usize, |acc, c| {
        let d = c.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(usize::from(d))
    })
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn unfolded_collapses_folds_only() {
        let v = "newfangled value\r\n continued  value";
        assert_eq!(Unfolded(v).to_string(), "newfangled value continued  value");
        assert_eq!(Unfolded("a \r\n\t b\n c").to_string(), "a b c");
        assert_eq!(Unfolded("plain").to_string(), "plain");
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v: Vec<_> = split_list("\"a,b\" <sip:x@y;p=1,2>;q=1 , <sip:z>,, c\r\n ,d").collect();
        assert_eq!(v, ["\"a,b\" <sip:x@y;p=1,2>;q=1", "<sip:z>", "", "c", "d"]);
        assert_eq!(split_list("  ").count(), 0);
        assert_eq!(split_list("\"open, x").collect::<Vec<_>>(), ["\"open, x"]);
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"J R \\\\\\\"\"   <sip:j@x>\r\n  ;\r\n  tag = 98").unwrap();
        assert_eq!(n.display_name, Some("\"J R \\\\\\\"\""));
        assert_eq!(n.uri, "sip:j@x");
        assert_eq!(n.tag(), Some("98"));
        let n = NameAddr::parse("sip:a@b ;   tag    = 1918n;x").unwrap();
        assert_eq!(
            (n.uri, n.tag(), n.params.get("x")),
            ("sip:a@b", Some("1918n"), Some(""))
        );
        let n = NameAddr::parse("caller<sip:c@e>;tag=3").unwrap();
        assert_eq!(n.display_name, Some("caller"));
        assert_eq!(NameAddr::parse("< sip:t@o >").unwrap().uri, "sip:t@o");
        assert!(NameAddr::parse("\"Mr. J <sip:j@e>").is_none());
        assert!(NameAddr::parse("<sip:j@e").is_none());
        assert!(NameAddr::parse("\"Joe\" <sip:j@e>;;;;").is_none());
        assert!(NameAddr::parse("sip:u@e?Route=x").is_none());
        assert!(NameAddr::parse("<sip:u@e?Route=x>").is_some());
        assert!(NameAddr::parse("<sip:u@e> junk").is_none());
        assert!(NameAddr::parse("").is_none());
    }

    #[test]
    fn via_forms() {
        let v = Via::parse("SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v.transport, v.sent_by, v.branch()),
            ("UDP", "192.0.2.2", Some("390skdjuw"))
        );
        let v = Via::parse("SIP/2.0/UDP [2001:db8::1]:5060;rport;branch=z9hG4bK1").unwrap();
        assert_eq!(
            (v.sent_by, v.params.get("rport")),
            ("[2001:db8::1]:5060", Some(""))
        );
        let v = Via::parse("SIP / 2.0 / UDP  h ; branch=\r\n z9hG4bK30239").unwrap();
        assert_eq!(v.branch(), Some("z9hG4bK30239"));
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;").is_none());
        assert!(Via::parse("SIP/7.0/UDP h").is_none());
        assert!(Via::parse("SIP/2.0/UDP").is_none());
        assert!(Via::parse(";").is_none());
    }

    #[test]
    fn cseq_and_numbers() {
        assert_eq!(
            CSeq::parse("0009\r\n  INVITE"),
            Some(CSeq {
                number: 9,
                method: "INVITE"
            })
        );
        assert_eq!(
            CSeq::parse("4294967295 ACK").map(|c| c.number),
            Some(u32::MAX)
        );
        assert!(CSeq::parse("4294967296 ACK").is_none());
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_none());
        assert!(CSeq::parse("1INVITE").is_none());
        assert!(CSeq::parse("1 INVITE x").is_none());
        assert_eq!(parse_usize("-999"), None);
        assert_eq!(parse_u32("0068"), Some(68));
    }

    #[test]
    fn uri_helpers() {
        assert_eq!(
            uri_user("sip:user;par=u%40example.net@example.com"),
            Some("user;par=u%40example.net")
        );
        assert_eq!(uri_user("sip:a:pw@h"), Some("a"));
        assert_eq!(uri_user("sip:h"), None);
        assert_eq!(uri_scheme("soap.beep://h"), Some("soap.beep"));
        assert!(is_plausible_uri("soap.beep://192.0.2.103:3002"));
        assert!(!is_plausible_uri("<sip:u@e>"));
        assert!(!is_plausible_uri("sip:u@e; lr"));
        assert!(!is_plausible_uri("1sip:x"));
    }
}
