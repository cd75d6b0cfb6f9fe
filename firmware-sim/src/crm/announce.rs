//! Publishing an announcement as the CRM does: the audio first, retained on
//! `P/audio/{sha256 of the bytes}`, then the Announcement document, retained on
//! `P/announcements/{id}` (QoS 1 both, as `deploy/asyncapi.yaml` says). Publishing the audio
//! first means a node that receives the document can already have (or soon get) what it
//! names.
//!
//! Before anything is sent, the document is checked with the agent's own decoder
//! (`edge::announcements::decode`) and the WAV with the agent's audio decoder, so the
//! CRM never publishes something a node would refuse.

use std::time::Duration;

use edge::announcements::{self as wire, hex, sha256};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{json, Value};

use super::{BrokerConfig, CrmError};

/// What to announce (the fields of the Announcement document).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceSpec {
    /// `id`.
    pub id: String,
    /// `version` (only increases).
    pub version: u32,
    /// `priority`: higher plays first.
    pub priority: i32,
    /// `scope.sites` (empty: everywhere).
    pub sites: Vec<String>,
    /// `scope.dialled`, E.164 (empty: every dialled number).
    pub dialled: Vec<String>,
    /// `scope.caller_prefixes`, E.164 prefixes (empty: every caller).
    pub caller_prefixes: Vec<String>,
    /// `valid_from`, RFC 3339.
    pub valid_from: Option<String>,
    /// `valid_until`, RFC 3339.
    pub valid_until: Option<String>,
    /// `text`, for nodes with a speech engine.
    pub text: Option<String>,
    /// `offer_callback`.
    pub offer_callback: bool,
    /// `language`.
    pub language: Option<String>,
    /// Sign the document with this Ed25519 private key (nodes with `announcements.signing_key`
    /// accept only signed announcements).
    pub signing_key: Option<Seed>,
}

/// An Ed25519 private key's 32-byte seed (its `Debug` does not print it).
#[derive(Clone, PartialEq, Eq)]
pub struct Seed(pub [u8; 32]);

impl core::fmt::Debug for Seed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Seed(…)")
    }
}

impl AnnounceSpec {
    /// An announcement `id` at `version` that applies everywhere, offers a callback and has
    /// nothing else set.
    #[must_use]
    pub fn new(id: &str, version: u32) -> AnnounceSpec {
        AnnounceSpec {
            id: id.to_owned(),
            version,
            priority: 0,
            sites: Vec::new(),
            dialled: Vec::new(),
            caller_prefixes: Vec::new(),
            valid_from: None,
            valid_until: None,
            text: None,
            offer_callback: true,
            language: None,
            signing_key: None,
        }
    }

    /// The Announcement JSON document naming `audio_sha256` (lowercase hex) when given.
    #[must_use]
    pub fn document(&self, audio_sha256: Option<&str>) -> Value {
        let mut doc = json!({
            "id": self.id,
            "version": self.version,
            "priority": self.priority,
            "scope": {
                "sites": self.sites,
                "dialled": self.dialled,
                "caller_prefixes": self.caller_prefixes,
            },
            "offer_callback": self.offer_callback,
        });
        if let Some(map) = doc.as_object_mut() {
            let mut put = |k: &str, v: &Option<String>| {
                if let Some(v) = v {
                    map.insert(k.to_owned(), Value::String(v.clone()));
                }
            };
            put("valid_from", &self.valid_from);
            put("valid_until", &self.valid_until);
            put("text", &self.text);
            put("language", &self.language);
            if let Some(h) = audio_sha256 {
                map.insert("audio_sha256".to_owned(), Value::String(h.to_owned()));
            }
        }
        doc
    }
}

/// One retained message as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedMessage {
    /// The topic.
    pub topic: String,
    /// Payload size in bytes.
    pub bytes: usize,
}

/// What [`announce`] published.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// The audio message (`None` for a text-only announcement).
    pub audio: Option<PublishedMessage>,
    /// Lowercase hex SHA-256 of the audio.
    pub audio_sha256: Option<String>,
    /// Playing time of the audio at 8 kHz.
    pub audio_duration: Option<Duration>,
    /// The announcement message.
    pub announcement: PublishedMessage,
    /// The document as published.
    pub document: Value,
}

/// `P/audio/{sha256}`.
#[must_use]
pub fn audio_topic(prefix: &str, sha256_hex: &str) -> String {
    format!("{prefix}/audio/{sha256_hex}")
}

/// `P/announcements/{id}`.
#[must_use]
pub fn announcement_topic(prefix: &str, id: &str) -> String {
    format!("{prefix}/announcements/{id}")
}

/// Checks that a node would accept `spec` with the given audio: the WAV decodes and the
/// document passes the agent's validation. Returns the audio's hash and duration.
///
/// # Errors
/// [`CrmError::Audio`] for unplayable audio, [`CrmError::Invalid`] for a field a node would
/// refuse (the message names it).
pub fn check(
    spec: &AnnounceSpec,
    wav: Option<&[u8]>,
) -> Result<(Option<String>, Option<Duration>), CrmError> {
    let (hash, duration) = match wav {
        Some(bytes) => {
            let pcm = edge::media::audio::decode_wav(bytes)
                .map_err(|e| CrmError::Audio(e.to_string()))?;
            let ms = u64::try_from(pcm.len()).unwrap_or(u64::MAX) / 8;
            (Some(hex(&sha256(bytes))), Some(Duration::from_millis(ms)))
        }
        None => (None, None),
    };
    let doc = spec.document(hash.as_deref());
    let bytes = serde_json::to_vec(&doc).map_err(|e| CrmError::Invalid(e.to_string()))?;
    wire::decode(&bytes).map_err(|e| CrmError::Invalid(format!("announcement: {e}")))?;
    Ok((hash, duration))
}

/// Publishes the audio (when given) and then the announcement, both retained with QoS 1,
/// and returns once the broker acknowledged both (or `timeout`).
///
/// # Errors
/// As [`check`], and [`CrmError::Mqtt`] / [`CrmError::Timeout`] when the broker fails.
pub async fn announce(
    broker: &BrokerConfig,
    prefix: &str,
    spec: &AnnounceSpec,
    wav: Option<&[u8]>,
    timeout: Duration,
) -> Result<Published, CrmError> {
    let (hash, audio_duration) = check(spec, wav)?;
    let mut document = spec.document(hash.as_deref());
    let mut doc_bytes =
        serde_json::to_vec(&document).map_err(|e| CrmError::Invalid(e.to_string()))?;
    if let Some(Seed(seed)) = &spec.signing_key {
        doc_bytes = edge::link::signature::sign_document(seed, &doc_bytes)
            .map_err(|e| CrmError::Invalid(e.to_string()))?;
        document =
            serde_json::from_slice(&doc_bytes).map_err(|e| CrmError::Invalid(e.to_string()))?;
    }
    let mut messages = Vec::new();
    let mut audio = None;
    if let (Some(h), Some(bytes)) = (&hash, wav) {
        let topic = audio_topic(prefix, h);
        audio = Some(PublishedMessage {
            topic: topic.clone(),
            bytes: bytes.len(),
        });
        messages.push((topic, bytes.to_vec()));
    }
    let announcement = PublishedMessage {
        topic: announcement_topic(prefix, &spec.id),
        bytes: doc_bytes.len(),
    };
    messages.push((announcement.topic.clone(), doc_bytes));
    publish_retained(broker, messages, timeout).await?;
    Ok(Published {
        audio,
        audio_sha256: hash,
        audio_duration,
        announcement,
        document,
    })
}

/// Withdraws announcement `id`: the empty retained payload on `P/announcements/{id}`.
///
/// # Errors
/// [`CrmError::Mqtt`] / [`CrmError::Timeout`] when the broker fails.
pub async fn withdraw(
    broker: &BrokerConfig,
    prefix: &str,
    id: &str,
    timeout: Duration,
) -> Result<PublishedMessage, CrmError> {
    let topic = announcement_topic(prefix, id);
    publish_retained(broker, vec![(topic.clone(), Vec::new())], timeout).await?;
    Ok(PublishedMessage { topic, bytes: 0 })
}

/// Connects, publishes each `(topic, payload)` retained with QoS 1 in order, waits for every
/// PUBACK, and disconnects.
///
/// # Errors
/// [`CrmError::Mqtt`] when the connection fails, [`CrmError::Timeout`] after `timeout`.
pub async fn publish_retained(
    broker: &BrokerConfig,
    messages: Vec<(String, Vec<u8>)>,
    timeout: Duration,
) -> Result<(), CrmError> {
    let (client, mut eventloop) = AsyncClient::new(broker.options(), 16);
    let want = messages.len();
    for (topic, payload) in messages {
        client
            .try_publish(topic, QoS::AtLeastOnce, true, payload)
            .map_err(|e| CrmError::Mqtt(e.to_string()))?;
    }
    let work = async {
        let mut acked = 0;
        while acked < want {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(Event::Incoming(Packet::ConnAck(c)))
                    if c.code != rumqttc::ConnectReturnCode::Success =>
                {
                    return Err(CrmError::Mqtt(format!("connection refused: {:?}", c.code)));
                }
                Ok(_) => {}
                Err(e) => return Err(CrmError::Mqtt(e.to_string())),
            }
        }
        let _ = client.try_disconnect();
        // Let the DISCONNECT go out (the loop ends with an error once it has).
        for _ in 0..8 {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| CrmError::Timeout("the PUBACKs"))?
}
