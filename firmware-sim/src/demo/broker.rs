//! The demo's MQTT broker: rumqttd in this process, configured in code, on a free
//! 127.0.0.1 port (MQTT 3.1.1). It runs on its own threads until the process exits.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Largest message the demo broker takes (announcement audio).
const MAX_PAYLOAD: usize = 16 << 20;

fn config(listen: SocketAddr) -> Config {
    let server = ServerSettings {
        name: "demo-v4".to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 5_000,
            max_payload_size: MAX_PAYLOAD,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 500,
            max_segment_size: 4 * MAX_PAYLOAD,
            max_segment_count: 4,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}

/// Starts the broker and returns its address once it accepts connections.
///
/// # Errors
/// A message when no port could be found or the broker does not come up within 5 s.
pub(crate) fn start() -> Result<SocketAddr, String> {
    for _ in 0..5 {
        // Pick a free port, release it, and hand it to the broker (another program could take
        // it in between: then try again with another one).
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for the broker: {e}"))?;
        let mut broker = Broker::new(config(addr));
        let thread = std::thread::Builder::new()
            .name("demo-broker".to_owned())
            .spawn(move || broker.start().map_err(|e| e.to_string()))
            .map_err(|e| format!("cannot start the broker thread: {e}"))?;
        for _ in 0..250 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(addr);
            }
            if thread.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err("the in-process broker did not start".to_owned())
}
