//! Writing our SDP: the answer kept per call, and our own offer for body-less INVITEs.

use core::fmt::{self, Write};
use core::net::{IpAddr, SocketAddr};

use super::negotiate::{accept_answer, MediaLines};
use super::{
    BufferTooSmall, Codec, Config, Direction, Error, MediaKind, Negotiated, Preference, Proto,
    SessionDescription, PTIME_MS,
};
use crate::rtp::PayloadType;

/// `fmt::Write` into a byte slice; a full slice is an error, never a panic.
struct Cursor<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn addr_fields(addr: IpAddr) -> (&'static str, IpAddr) {
    match addr {
        IpAddr::V4(_) => ("IP4", addr),
        IpAddr::V6(_) => ("IP6", addr),
    }
}

fn write_session(w: &mut Cursor<'_>, id: u64, version: u64, addr: IpAddr) -> fmt::Result {
    let (t, a) = addr_fields(addr);
    write!(
        w,
        "v=0\r\no=ccedge {id} {version} IN {t} {a}\r\ns=ccedge\r\nc=IN {t} {a}\r\nt=0 0\r\n"
    )
}

fn write_telephone_event(w: &mut Cursor<'_>, te: PayloadType) -> fmt::Result {
    write!(
        w,
        "a=rtpmap:{te} telephone-event/8000\r\na=fmtp:{te} 0-15\r\n"
    )
}

fn finish(
    buf: &mut [u8],
    f: impl FnOnce(&mut Cursor<'_>) -> fmt::Result,
) -> Result<usize, BufferTooSmall> {
    let mut w = Cursor { buf, len: 0 };
    f(&mut w).map_err(|_| BufferTooSmall)?;
    Ok(w.len)
}

/// Our SDP answer, kept by the call and written into every 200 OK (and re-INVITE answer).
/// Small and `Copy`: the offer's other m-lines are remembered as 3 bytes each.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// `o=` session id (the shell picks it, e.g. from the clock at call start).
    pub session_id: u64,
    /// `o=` session version; increment when a later answer in the dialog changes.
    pub session_version: u64,
    /// Our RTP address.
    pub address: IpAddr,
    /// Our RTP port.
    pub rtp_port: u16,
    /// The codec we answered.
    pub codec: Codec,
    /// Its payload type.
    pub payload_type: PayloadType,
    /// The `telephone-event` payload type, when negotiated.
    pub telephone_event: Option<PayloadType>,
    /// Our direction attribute.
    pub direction: Direction,
    /// Write `a=rtcp-mux` (the offer had it).
    pub rtcp_mux: bool,
    /// Without rtcp-mux: write `a=rtcp:PORT` (RFC 3605) so the peer sends its RTCP there.
    pub rtcp_port: Option<u16>,
    lines: MediaLines,
}

impl Negotiated {
    /// The answer to write for this negotiation, with our RTP address and `o=` numbers.
    #[must_use]
    pub fn answer(&self, local_rtp: SocketAddr, session_id: u64, session_version: u64) -> Answer {
        Answer {
            session_id,
            session_version,
            address: local_rtp.ip(),
            rtp_port: local_rtp.port(),
            codec: self.codec,
            payload_type: self.payload_type,
            telephone_event: self.telephone_event.map(|t| t.payload_type),
            direction: self.direction,
            rtcp_mux: self.rtcp_mux,
            // The node reads RTCP on its RTP port (one socket per call), told apart from RTP
            // by the RFC 5761 rule; without rtcp-mux the peer learns that from `a=rtcp`.
            rtcp_port: (!self.rtcp_mux).then_some(local_rtp.port()),
            lines: self.lines,
        }
    }
}

impl Answer {
    /// Writes the answer body; returns its length.
    ///
    /// # Errors
    /// [`BufferTooSmall`] when `buf` cannot hold it (about 250 bytes for one audio line).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        finish(buf, |w| {
            write_session(w, self.session_id, self.session_version, self.address)?;
            let count = usize::from(self.lines.count);
            for (i, slot) in self.lines.slots.iter().enumerate().take(count) {
                if i == usize::from(self.lines.ours) {
                    self.write_audio(w)?;
                } else {
                    // RFC 3264 §6: a rejected stream keeps its media and protocol, port 0.
                    let kind = slot.kind.as_str().unwrap_or("audio");
                    let proto = slot.proto.as_str().unwrap_or("RTP/AVP");
                    let fmt: &dyn fmt::Display = match slot.proto {
                        p if p.is_rtp() => &slot.fmt,
                        Proto::Udptl => &"t38",
                        _ => &"*",
                    };
                    write!(w, "m={kind} 0 {proto} {fmt}\r\n")?;
                }
            }
            Ok(())
        })
    }

    fn write_audio(&self, w: &mut Cursor<'_>) -> fmt::Result {
        let pt = self.payload_type;
        write!(w, "m=audio {} RTP/AVP {pt}", self.rtp_port)?;
        if let Some(te) = self.telephone_event {
            write!(w, " {te}")?;
        }
        write!(
            w,
            "\r\na=rtpmap:{pt} {}/8000\r\n",
            self.codec.encoding_name()
        )?;
        if let Some(te) = self.telephone_event {
            write_telephone_event(w, te)?;
        }
        if let (false, Some(p)) = (self.rtcp_mux, self.rtcp_port) {
            write!(w, "a=rtcp:{p}\r\n")?;
        }
        write!(w, "a=ptime:{PTIME_MS}\r\na={}\r\n", self.direction.as_str())?;
        if self.rtcp_mux {
            w.write_str("a=rtcp-mux\r\n")?;
        }
        Ok(())
    }

    /// The media kind of every line of the answer, in order (for logs and tests).
    pub fn line_kinds(&self) -> impl Iterator<Item = MediaKind> + '_ {
        self.lines
            .slots
            .iter()
            .take(usize::from(self.lines.count))
            .map(|s| s.kind)
    }
}

/// Our own offer, for an INVITE without SDP: sent in the 200 OK, answered in the ACK.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version.
    pub session_version: u64,
    /// Our RTP address.
    pub address: IpAddr,
    /// Our RTP port.
    pub rtp_port: u16,
    /// The codecs offered, most preferred first.
    pub codecs: [Option<Codec>; 2],
    /// The `telephone-event` payload type offered.
    pub telephone_event: Option<PayloadType>,
    /// Our direction attribute.
    pub direction: Direction,
    config: Config,
}

impl Offer {
    /// An offer of what `cfg` allows (PCMU/PCMA in preference order, telephone-event as PT
    /// 101), `sendrecv`.
    ///
    /// # Errors
    /// [`Error::NoCommonCodec`] when `cfg` allows no codec.
    pub fn new(
        cfg: &Config,
        local_rtp: SocketAddr,
        session_id: u64,
        session_version: u64,
    ) -> Result<Offer, Error> {
        let order = match cfg.prefer {
            Preference::Pcma => [Codec::Pcma, Codec::Pcmu],
            Preference::Offerer | Preference::Pcmu => [Codec::Pcmu, Codec::Pcma],
        };
        let mut codecs = [None; 2];
        let allowed = order.iter().copied().filter(|c| match c {
            Codec::Pcmu => cfg.pcmu,
            Codec::Pcma => cfg.pcma,
        });
        for (slot, c) in codecs.iter_mut().zip(allowed) {
            *slot = Some(c);
        }
        if codecs[0].is_none() {
            return Err(Error::NoCommonCodec);
        }
        Ok(Offer {
            session_id,
            session_version,
            address: local_rtp.ip(),
            rtp_port: local_rtp.port(),
            codecs,
            telephone_event: cfg
                .telephone_event
                .then_some(PayloadType::TELEPHONE_EVENT_DEFAULT),
            direction: Direction::SendRecv,
            config: Config {
                prefer: Preference::Offerer,
                ..*cfg
            },
        })
    }

    /// Writes the offer body; returns its length.
    ///
    /// # Errors
    /// [`BufferTooSmall`] when `buf` cannot hold it (about 300 bytes).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        finish(buf, |w| {
            write_session(w, self.session_id, self.session_version, self.address)?;
            write!(w, "m=audio {} RTP/AVP", self.rtp_port)?;
            for c in self.codecs.iter().flatten() {
                write!(w, " {}", c.static_payload_type())?;
            }
            if let Some(te) = self.telephone_event {
                write!(w, " {te}")?;
            }
            w.write_str("\r\n")?;
            for c in self.codecs.iter().flatten() {
                let pt = c.static_payload_type();
                write!(w, "a=rtpmap:{pt} {}/8000\r\n", c.encoding_name())?;
            }
            if let Some(te) = self.telephone_event {
                write_telephone_event(w, te)?;
            }
            write!(w, "a=ptime:{PTIME_MS}\r\na={}\r\n", self.direction.as_str())
        })
    }

    /// Reads the peer's answer (from the ACK) to this offer.
    ///
    /// # Errors
    /// [`Error::AnswerMismatch`] when it does not have exactly our one audio line;
    /// [`Error::NoCommonCodec`] when it rejected the line or picked nothing we offered;
    /// [`Error::NoCommonProfile`], [`Error::NoConnection`] as for an offer.
    pub fn accept_answer(&self, answer: &SessionDescription<'_>) -> Result<Negotiated, Error> {
        accept_answer(answer, &self.config, self.telephone_event, self.direction)
    }
}
