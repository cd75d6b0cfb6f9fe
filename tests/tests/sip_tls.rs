//! SIP over TLS against the real agent: a certificate made with openssl, a rustls client, a
//! call answered, acknowledged and ended on the one TLS connection.
#![allow(clippy::disallowed_methods)] // the tests time real sockets

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ccedge_tests::rawsip::StreamReader;
use ccedge_tests::{free_tcp_port, Agent, AgentOptions, TempDir};
use tokio_rustls::rustls::{self, pki_types::ServerName, ClientConnection, StreamOwned};

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`; `false` when openssl is
/// not installed.
fn make_certs(dir: &Path) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map(|o| {
                assert!(
                    o.status.success(),
                    "openssl {args:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            })
            .is_ok()
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=ccedge test CA",
    ]);
    if !run(&ca) {
        return false;
    }
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    true
}

fn tls_client(ca: &Path, to: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    let pem = std::fs::read(ca).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.expect("cert")).expect("add");
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = ClientConnection::new(Arc::new(cfg), name).expect("client");
    let tcp = TcpStream::connect(to).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    StreamOwned::new(conn, tcp)
}

fn request(method: &str, cseq: u32, agent: SocketAddr, local: SocketAddr, to_tag: &str) -> String {
    let body = if method == "INVITE" {
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 43000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    } else {
        ""
    };
    let to_tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    format!(
        "{method} sip:+18005550100@{agent};transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS {local};branch=z9hG4bK-tls-{method}-{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+12155550123@127.0.0.1>;tag=tls-caller\r\n\
         To: <sip:+18005550100@127.0.0.1>{to_tag}\r\n\
         Call-ID: tls-call-1@127.0.0.1\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:+12155550123@{local};transport=tls>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_call_over_tls_is_answered_and_ended_on_its_connection() {
    let dir = TempDir::new("tls");
    if !make_certs(dir.path()) {
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let port = free_tcp_port();
    let opts = AgentOptions {
        sip_extra: format!(
            "tls_listen = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"",
            dir.path().join("node.pem").display(),
            dir.path().join("node.key").display()
        ),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let tls_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut s = tls_client(&dir.path().join("ca.pem"), tls_addr);
    let local = s.sock.local_addr().expect("local");
    let mut reader = StreamReader::default();
    s.write_all(request("INVITE", 1, agent.sip, local, "").as_bytes())
        .expect("write");
    let ok = reader
        .recv_until(&mut s, Duration::from_secs(5), |t| {
            t.starts_with("SIP/2.0 2") || t.starts_with("SIP/2.0 4") || t.starts_with("SIP/2.0 5")
        })
        .expect("a final answer over TLS");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains(";transport=tls>"), "{ok}");
    let tag = ok
        .lines()
        .find_map(|l| l.strip_prefix("To: "))
        .and_then(|v| v.split(";tag=").nth(1))
        .expect("To tag")
        .trim()
        .to_owned();
    s.write_all(
        request("ACK", 1, agent.sip, local, &tag)
            .replace("Content-Length: 179", "Content-Length: 0")
            .as_bytes(),
    )
    .expect("ack");
    s.write_all(request("BYE", 2, agent.sip, local, &tag).as_bytes())
        .expect("bye");
    let bye_ok = reader
        .recv_until(&mut s, Duration::from_secs(5), |t| {
            t.contains("CSeq: 2 BYE")
        })
        .expect("the 200 to the BYE over TLS");
    assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");
    // Plain TCP on the TLS port is not SIP: the handshake fails and nothing is answered.
    let mut plain = TcpStream::connect(tls_addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = plain.write_all(request("OPTIONS", 1, agent.sip, local, "").as_bytes());
    let mut b = [0u8; 64];
    let n = plain.read(&mut b).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&b[..n]).starts_with("SIP/2.0"));
}
