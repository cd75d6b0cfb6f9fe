//! RTCP (RFC 3550 §6) for one G.711 call: build the compound SR + SDES ccedge sends, and read
//! the compound packets a peer sends back (SR, RR; other types are skipped).
//!
//! Everything works on caller buffers; nothing here allocates or panics on input.
//!
//! * [`build_report`] writes SR (RFC 3550 §6.4.1) with at most one report block about the
//!   peer's stream, followed by SDES with a CNAME (§6.5).
//! * [`build_bye`] writes a compound RR (no blocks) + BYE (§6.6).
//! * [`parse`] walks a compound packet, checks every length, and returns what the peer said
//!   about our stream plus the NTP timestamp of its SR (for our LSR/DLSR).
//! * [`ReportState`] turns the inbound statistics ([`super::InboundStats`]) into a report
//!   block: fraction lost over the last interval (RFC 3550 A.3), cumulative loss, jitter, and
//!   LSR/DLSR from the peer's last SR.
//! * [`is_rtcp`]: the RFC 5761 §4 demultiplexing rule for rtcp-mux (second byte 192 ..= 223).

use super::{InboundStats, Ssrc};
use crate::time::Instant;
use crate::BufferTooSmall;

/// Packet type of a sender report.
pub const PT_SR: u8 = 200;
/// Packet type of a receiver report.
pub const PT_RR: u8 = 201;
/// Packet type of source description.
pub const PT_SDES: u8 = 202;
/// Packet type of goodbye.
pub const PT_BYE: u8 = 203;

/// Longest CNAME written (SDES items hold at most 255 bytes).
pub const MAX_CNAME: usize = 255;

/// RFC 5761 §4: on a multiplexed port, a datagram whose second byte is 192 ..= 223 is RTCP
/// (RTP payload types 64 ..= 95 with the marker bit set would collide and are not used).
#[must_use]
pub fn is_rtcp(datagram: &[u8]) -> bool {
    matches!(datagram.get(1), Some(192..=223))
}

/// Why a datagram is not an RTCP compound packet ccedge reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Shorter than one 4-byte common header, or not a multiple of 4 bytes.
    TooShort,
    /// A version field is not 2.
    UnsupportedVersion,
    /// A length field runs past the datagram, or an SR/RR is shorter than its report count.
    BadLength,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::TooShort => "RTCP packet too short",
            Error::UnsupportedVersion => "RTCP version is not 2",
            Error::BadLength => "RTCP length field invalid",
        })
    }
}

impl core::error::Error for Error {}

/// One RFC 3550 §6.4.1 report block.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: Ssrc,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed on the wire).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_max_sequence: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from the source (0: none).
    pub lsr: u32,
    /// Delay since that SR in 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    const LEN: usize = 24;

    fn emit(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.ssrc.0.to_be_bytes());
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
        out[4..8].copy_from_slice(&((u32::from(self.fraction_lost) << 24) | lost).to_be_bytes());
        out[8..12].copy_from_slice(&self.extended_max_sequence.to_be_bytes());
        out[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        out[16..20].copy_from_slice(&self.lsr.to_be_bytes());
        out[20..24].copy_from_slice(&self.dlsr.to_be_bytes());
    }

    fn read(b: &[u8]) -> Option<ReportBlock> {
        let w = |i: usize| -> Option<u32> {
            let s = b.get(i..i + 4)?;
            Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        };
        let lost_word = w(4)?;
        // Sign-extend the 24-bit count.
        let cumulative_lost = ((lost_word << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: Ssrc(w(0)?),
            fraction_lost: (lost_word >> 24) as u8,
            cumulative_lost,
            extended_max_sequence: w(8)?,
            jitter: w(12)?,
            lsr: w(16)?,
            dlsr: w(20)?,
        })
    }

    /// Round-trip time in 1/65536 s (RFC 3550 §6.4.1: `A - LSR - DLSR`), given the middle 32
    /// bits `arrival` of our NTP clock when this block arrived. `None` when the peer has not
    /// seen an SR yet (LSR 0) or the result would be negative.
    #[must_use]
    pub fn round_trip(&self, arrival: u32) -> Option<u32> {
        if self.lsr == 0 {
            return None;
        }
        let rtt = arrival.wrapping_sub(self.lsr).wrapping_sub(self.dlsr);
        (rtt < 0x8000_0000).then_some(rtt)
    }
}

/// The sender-info part of an SR.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (seconds since 1900 in the high 32 bits, fraction in the low).
    pub ntp: u64,
    /// The RTP timestamp matching `ntp`.
    pub rtp_timestamp: u32,
    /// Packets sent.
    pub packet_count: u32,
    /// Payload octets sent.
    pub octet_count: u32,
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// The 64-bit NTP timestamp of a wall-clock time given in Unix milliseconds (0 before 1970).
#[must_use]
pub const fn ntp_from_unix_ms(ms: i64) -> u64 {
    if ms < 0 {
        return 0;
    }
    let ms = ms as u64;
    let secs = ms / 1000 + NTP_UNIX_OFFSET_S;
    let frac = ((ms % 1000) << 32) / 1000;
    (secs << 32) | frac
}

/// The middle 32 bits of a 64-bit NTP timestamp (the LSR/DLSR clock).
#[must_use]
pub const fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// 1/65536 s units to whole milliseconds.
#[must_use]
pub const fn units_to_ms(units: u32) -> u32 {
    ((units as u64 * 1000) >> 16) as u32
}

fn header(out: &mut [u8], count: u8, pt: u8, len_bytes: usize) {
    out[0] = 0x80 | (count & 0x1f);
    out[1] = pt;
    let words = (len_bytes / 4 - 1) as u16;
    out[2..4].copy_from_slice(&words.to_be_bytes());
}

fn sdes(out: &mut [u8], ssrc: Ssrc, cname: &[u8]) -> Result<usize, BufferTooSmall> {
    let cname = &cname[..cname.len().min(MAX_CNAME)];
    // header 4 + ssrc 4 + type 1 + len 1 + text + at least one null, padded to 4.
    let raw = 4 + 4 + 2 + cname.len() + 1;
    let len = (raw + 3) & !3;
    let out = out.get_mut(..len).ok_or(BufferTooSmall)?;
    out.fill(0);
    header(out, 1, PT_SDES, len);
    out[4..8].copy_from_slice(&ssrc.0.to_be_bytes());
    out[8] = 1; // CNAME
    out[9] = cname.len() as u8;
    out[10..10 + cname.len()].copy_from_slice(cname);
    Ok(len)
}

/// Writes SR (with `block` if any) + SDES CNAME into `buf`; returns the length.
pub fn build_report(
    buf: &mut [u8],
    ssrc: Ssrc,
    info: &SenderInfo,
    block: Option<&ReportBlock>,
    cname: &[u8],
) -> Result<usize, BufferTooSmall> {
    let sr_len = 28 + if block.is_some() { ReportBlock::LEN } else { 0 };
    let sr = buf.get_mut(..sr_len).ok_or(BufferTooSmall)?;
    header(sr, u8::from(block.is_some()), PT_SR, sr_len);
    sr[4..8].copy_from_slice(&ssrc.0.to_be_bytes());
    sr[8..16].copy_from_slice(&info.ntp.to_be_bytes());
    sr[16..20].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
    sr[20..24].copy_from_slice(&info.packet_count.to_be_bytes());
    sr[24..28].copy_from_slice(&info.octet_count.to_be_bytes());
    if let Some(b) = block {
        b.emit(&mut sr[28..52]);
    }
    let rest = buf.get_mut(sr_len..).ok_or(BufferTooSmall)?;
    Ok(sr_len + sdes(rest, ssrc, cname)?)
}

/// Writes an empty RR followed by BYE for `ssrc`; returns the length (16).
pub fn build_bye(buf: &mut [u8], ssrc: Ssrc) -> Result<usize, BufferTooSmall> {
    let out = buf.get_mut(..16).ok_or(BufferTooSmall)?;
    header(&mut out[..8], 0, PT_RR, 8);
    out[4..8].copy_from_slice(&ssrc.0.to_be_bytes());
    header(&mut out[8..16], 1, PT_BYE, 8);
    out[12..16].copy_from_slice(&ssrc.0.to_be_bytes());
    Ok(16)
}

/// What a compound packet said that ccedge uses.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Parsed {
    /// The SSRC of the first SR or RR.
    pub sender: Option<Ssrc>,
    /// The NTP timestamp of the peer's SR, if the packet had one.
    pub sender_ntp: Option<u64>,
    /// The report block about `ours` (the SSRC passed to [`parse`]), if any.
    pub about_us: Option<ReportBlock>,
    /// The packet contained a BYE.
    pub bye: bool,
}

/// Reads a compound RTCP packet. `ours` is the SSRC of the stream ccedge sends: only a report
/// block about it is returned. Unknown packet types are skipped; every length is checked.
pub fn parse(datagram: &[u8], ours: Ssrc) -> Result<Parsed, Error> {
    if datagram.len() < 4 || !datagram.len().is_multiple_of(4) {
        return Err(Error::TooShort);
    }
    let mut out = Parsed::default();
    let mut rest = datagram;
    while !rest.is_empty() {
        let (&b0, &pt) = match (rest.first(), rest.get(1)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(Error::TooShort),
        };
        if b0 >> 6 != 2 {
            return Err(Error::UnsupportedVersion);
        }
        let words = match rest.get(2..4) {
            Some(w) => usize::from(u16::from_be_bytes([w[0], w[1]])),
            None => return Err(Error::TooShort),
        };
        let len = (words + 1) * 4;
        let pkt = rest.get(..len).ok_or(Error::BadLength)?;
        rest = &rest[len..];
        let count = usize::from(b0 & 0x1f);
        let blocks_at = match pt {
            PT_SR => 28,
            PT_RR => 8,
            PT_BYE => {
                out.bye = true;
                continue;
            }
            _ => continue,
        };
        if pkt.len() < blocks_at + count * ReportBlock::LEN {
            return Err(Error::BadLength);
        }
        let ssrc = Ssrc(u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]));
        if out.sender.is_none() {
            out.sender = Some(ssrc);
        }
        if pt == PT_SR {
            let mut ntp = [0u8; 8];
            ntp.copy_from_slice(&pkt[8..16]);
            out.sender_ntp = Some(u64::from_be_bytes(ntp));
        }
        for i in 0..count {
            let at = blocks_at + i * ReportBlock::LEN;
            if let Some(block) = pkt.get(at..).and_then(ReportBlock::read) {
                if block.ssrc == ours {
                    out.about_us = Some(block);
                }
            }
        }
    }
    Ok(out)
}

/// Receiver-report bookkeeping for one call (RFC 3550 A.3): what was expected and received at
/// the previous report, and the peer's last SR.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct ReportState {
    expected_prior: u32,
    received_prior: u32,
    last_sr: u32,
    last_sr_at: Option<Instant>,
}

impl ReportState {
    /// A state with no report sent and no SR seen.
    #[must_use]
    pub const fn new() -> ReportState {
        ReportState {
            expected_prior: 0,
            received_prior: 0,
            last_sr: 0,
            last_sr_at: None,
        }
    }

    /// Remember the peer's SR (its NTP timestamp) and when it arrived.
    pub fn on_sender_report(&mut self, ntp: u64, now: Instant) {
        self.last_sr = ntp_middle(ntp);
        self.last_sr_at = Some(now);
    }

    /// The report block about the peer's stream for a report sent `now`; `None` before the
    /// first packet from the peer. Moves the "prior" counters forward.
    pub fn block(&mut self, stats: &InboundStats, now: Instant) -> Option<ReportBlock> {
        let ssrc = stats.ssrc?;
        let expected = stats.received.wrapping_add(stats.lost);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = stats.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = stats.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let dlsr = match self.last_sr_at {
            Some(at) => {
                let us = now.saturating_duration_since(at).as_micros();
                u32::try_from((us << 16) / 1_000_000).unwrap_or(u32::MAX)
            }
            None => 0,
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(stats.lost).unwrap_or(i32::MAX),
            extended_max_sequence: stats.extended_max_sequence,
            jitter: stats.jitter,
            lsr: self.last_sr,
            dlsr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block() -> ReportBlock {
        ReportBlock {
            ssrc: Ssrc(0x1234_5678),
            fraction_lost: 25,
            cumulative_lost: 42,
            extended_max_sequence: 0x0001_0010,
            jitter: 17,
            lsr: 0xabcd_0000,
            dlsr: 0x0001_8000,
        }
    }

    #[test]
    fn round_trip_build_parse() {
        let mut buf = [0u8; 128];
        let info = SenderInfo {
            ntp: 0x1122_3344_5566_7788,
            rtp_timestamp: 160,
            packet_count: 5,
            octet_count: 800,
        };
        let n = build_report(&mut buf, Ssrc(7), &info, Some(&block()), b"ccedge@node").unwrap();
        assert!(n.is_multiple_of(4));
        assert_eq!(buf[1], PT_SR);
        assert!(is_rtcp(&buf[..n]));
        let p = parse(&buf[..n], Ssrc(0x1234_5678)).unwrap();
        assert_eq!(p.sender, Some(Ssrc(7)));
        assert_eq!(p.sender_ntp, Some(info.ntp));
        assert_eq!(p.about_us, Some(block()));
        assert!(!p.bye);
        // A block about someone else is not ours.
        assert_eq!(parse(&buf[..n], Ssrc(1)).unwrap().about_us, None);
    }

    #[test]
    fn negative_loss_and_bye() {
        let mut b = block();
        b.cumulative_lost = -3;
        let mut buf = [0u8; 64];
        let n = build_report(&mut buf, Ssrc(7), &SenderInfo::default(), Some(&b), b"").unwrap();
        let p = parse(&buf[..n], b.ssrc).unwrap();
        assert_eq!(p.about_us.unwrap().cumulative_lost, -3);
        let n = build_bye(&mut buf, Ssrc(9)).unwrap();
        let p = parse(&buf[..n], Ssrc(1)).unwrap();
        assert!(p.bye);
        assert_eq!(p.sender, Some(Ssrc(9)));
    }

    #[test]
    fn malformed() {
        assert_eq!(parse(&[], Ssrc(0)), Err(Error::TooShort));
        assert_eq!(parse(&[0x80, 200, 0], Ssrc(0)), Err(Error::TooShort));
        assert_eq!(
            parse(&[0x40, 200, 0, 0], Ssrc(0)),
            Err(Error::UnsupportedVersion)
        );
        // Length says 2 words more than there are.
        assert_eq!(
            parse(&[0x80, 201, 0, 2, 0, 0, 0, 0], Ssrc(0)),
            Err(Error::BadLength)
        );
        // RR claims one block but carries none.
        assert_eq!(
            parse(&[0x81, 201, 0, 1, 0, 0, 0, 1], Ssrc(0)),
            Err(Error::BadLength)
        );
        // Unknown type is skipped.
        let p = parse(&[0x80, 204, 0, 0, 0x80, 201, 0, 1, 0, 0, 0, 5], Ssrc(0)).unwrap();
        assert_eq!(p.sender, Some(Ssrc(5)));
    }

    #[test]
    fn small_buffers_refused() {
        let mut buf = [0u8; 40];
        let r = build_report(
            &mut buf,
            Ssrc(1),
            &SenderInfo::default(),
            Some(&block()),
            b"x",
        );
        assert_eq!(r, Err(BufferTooSmall));
        assert_eq!(build_bye(&mut buf[..15], Ssrc(1)), Err(BufferTooSmall));
    }

    #[test]
    fn demux_rule() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 0]));
        assert!(!is_rtcp(&[0x80, 0x80 | 101]));
        assert!(!is_rtcp(&[0x80]));
    }

    #[test]
    fn rtt_and_block_from_stats() {
        let b = block();
        // Arrival 2 s after LSR, DLSR 1.5 s: 0.5 s round trip.
        let rtt = b.round_trip(b.lsr + 0x0002_0000).unwrap();
        assert_eq!(units_to_ms(rtt), 500);
        assert_eq!(ReportBlock { lsr: 0, ..b }.round_trip(5), None);

        let mut st = ReportState::new();
        let stats = InboundStats {
            ssrc: Some(Ssrc(3)),
            received: 90,
            lost: 10,
            extended_max_sequence: 99,
            jitter: 8,
            ..InboundStats::default()
        };
        st.on_sender_report(0x0000_1234_5678_0000, Instant::from_micros(1_000_000));
        let b = st.block(&stats, Instant::from_micros(1_500_000)).unwrap();
        assert_eq!(b.fraction_lost, 25); // 10 % of 256
        assert_eq!(b.cumulative_lost, 10);
        assert_eq!(b.lsr, 0x1234_5678);
        assert_eq!(b.dlsr, 0x8000);
        // Nothing new: no loss in the next interval.
        let b = st.block(&stats, Instant::from_micros(2_000_000)).unwrap();
        assert_eq!(b.fraction_lost, 0);
        assert_eq!(st.block(&InboundStats::default(), Instant::ZERO), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), ours in any::<u32>()) {
            let _ = parse(&data, Ssrc(ours));
        }
    }
}
