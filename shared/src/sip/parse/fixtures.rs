//! Typical requests, as a SIP trunk or sipp sends them, shared by the parser's tests.

/// A sipp-style INVITE with an SDP offer (PCMU, PCMA, telephone-event).
pub(super) const SIPP_INVITE: &[u8] = b"INVITE sip:4930123456@192.0.2.20:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5061;branch=z9hG4bK-3712-1-0;rport\r\n\
Max-Forwards: 70\r\n\
From: \"sipp\" <sip:sipp@192.0.2.10:5061>;tag=3712SIPpTag001\r\n\
To: <sip:4930123456@192.0.2.20:5060>\r\n\
Call-ID: 1-3712@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:sipp@192.0.2.10:5061;transport=udp>\r\n\
Subject: Performance Test\r\n\
User-Agent: sipp-load/3.7\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 232\r\n\
\r\n\
v=0\r\n\
o=ccedge-test 3712 3712 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 16384 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// An in-dialog BYE with compact headers and two Vias.
pub(super) const BYE: &[u8] = b"BYE sip:ccedge@192.0.2.20:5060 SIP/2.0\r\n\
v: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKproxy77\r\n\
v: SIP/2.0/UDP 192.0.2.10:5061;received=192.0.2.10;branch=z9hG4bK-3712-9-5\r\n\
Max-Forwards: 69\r\n\
f: \"sipp\" <sip:sipp@192.0.2.10:5061>;tag=3712SIPpTag001\r\n\
t: <sip:4930123456@192.0.2.20:5060>;tag=cc-a81f\r\n\
i: 1-3712@192.0.2.10\r\n\
CSeq: 2 BYE\r\n\
l: 0\r\n\
\r\n";

/// An OPTIONS keep-alive probe as trunks send them, with bare LF line ends.
pub(super) const OPTIONS_LF: &[u8] = b"OPTIONS sip:192.0.2.20 SIP/2.0\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKping42\n\
From: <sip:ping@203.0.113.5>;tag=p1ng\n\
To: <sip:192.0.2.20>\n\
Call-ID: ping-42@203.0.113.5\n\
CSeq: 42 OPTIONS\n\
Max-Forwards: 70\n\
Accept: application/sdp\n\
Content-Length: 0\n\
\n";

/// A 200 OK answering our BYE.
pub(super) const OK_BYE: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKcc-bye-1\r\n\
From: <sip:ccedge@192.0.2.20>;tag=cc-a81f\r\n\
To: \"sipp\" <sip:sipp@192.0.2.10:5061>;tag=3712SIPpTag001\r\n\
Call-ID: 1-3712@192.0.2.10\r\n\
CSeq: 1 BYE\r\n\
Content-Length: 0\r\n\
\r\n";
