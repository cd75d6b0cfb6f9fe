//! The topic names of `deploy/asyncapi.yaml` for one node, and the classification of incoming
//! topics.

/// Every topic the node publishes or subscribes to.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    prefix: String,
    node: String,
}

/// What an incoming message is, by its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound<'a> {
    /// `P/announcements/{id}`.
    Announcement(&'a str),
    /// `P/audio/{sha256}`.
    Audio(&'a str),
    /// `P/nodes/{site}/{node}/events/ack`.
    Ack,
    /// `P/nodes/{site}/{node}/events/replay`.
    Replay,
    /// `P/nodes/{site}/{node}/callbacks/{id}/state`.
    CallbackState(&'a str),
    /// Anything else (a broker that delivers more than we asked for).
    Other,
}

impl Topics {
    /// The topics under `prefix` for node `node` of `site`.
    pub(crate) fn new(prefix: &str, site: &str, node: &str) -> Topics {
        Topics {
            prefix: prefix.to_owned(),
            node: format!("{prefix}/nodes/{site}/{node}"),
        }
    }

    /// `…/status` (retained presence; the Last Will).
    pub(crate) fn status(&self) -> String {
        format!("{}/status", self.node)
    }

    /// `…/events`.
    pub(crate) fn events(&self) -> String {
        format!("{}/events", self.node)
    }

    /// `…/callbacks`.
    pub(crate) fn callbacks(&self) -> String {
        format!("{}/callbacks", self.node)
    }

    /// `…/events/ack` (the CRM's acknowledgements).
    pub(crate) fn events_ack(&self) -> String {
        format!("{}/events/ack", self.node)
    }

    /// `…/events/replay` (the CRM's replay requests).
    pub(crate) fn events_replay(&self) -> String {
        format!("{}/events/replay", self.node)
    }

    /// `…/callbacks/{id}/state` for one callback.
    #[cfg(test)]
    pub(crate) fn callback_state(&self, id: &str) -> String {
        format!("{}/callbacks/{id}/state", self.node)
    }

    /// `P/announcements/{id}`.
    #[cfg(test)]
    pub(crate) fn announcement(&self, id: &str) -> String {
        format!("{}/announcements/{id}", self.prefix)
    }

    /// `P/audio/{sha256}`.
    #[cfg(test)]
    pub(crate) fn audio(&self, sha256_hex: &str) -> String {
        format!("{}/audio/{sha256_hex}", self.prefix)
    }

    /// The subscriptions (all QoS 1).
    pub(crate) fn filters(&self) -> [String; 5] {
        [
            format!("{}/announcements/+", self.prefix),
            format!("{}/audio/+", self.prefix),
            self.events_ack(),
            self.events_replay(),
            format!("{}/callbacks/+/state", self.node),
        ]
    }

    /// Classifies an incoming topic.
    pub(crate) fn classify<'a>(&self, topic: &'a str) -> Inbound<'a> {
        if let Some(rest) = topic
            .strip_prefix(self.node.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            return match rest {
                "events/ack" => Inbound::Ack,
                "events/replay" => Inbound::Replay,
                _ => match rest
                    .strip_prefix("callbacks/")
                    .and_then(|r| r.strip_suffix("/state"))
                {
                    Some(id) if !id.is_empty() && !id.contains('/') => Inbound::CallbackState(id),
                    _ => Inbound::Other,
                },
            };
        }
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Inbound::Other;
        };
        let single = |s: &'a str| (!s.contains('/')).then_some(s);
        if let Some(id) = rest.strip_prefix("announcements/").and_then(single) {
            Inbound::Announcement(id)
        } else if let Some(h) = rest.strip_prefix("audio/").and_then(single) {
            Inbound::Audio(h)
        } else {
            Inbound::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_classification() {
        let t = Topics::new("ccedge/v1", "phl", "pi-001");
        assert_eq!(t.status(), "ccedge/v1/nodes/phl/pi-001/status");
        assert_eq!(t.events(), "ccedge/v1/nodes/phl/pi-001/events");
        assert_eq!(t.callbacks(), "ccedge/v1/nodes/phl/pi-001/callbacks");
        assert_eq!(t.filters()[0], "ccedge/v1/announcements/+");
        assert_eq!(
            t.filters()[4],
            "ccedge/v1/nodes/phl/pi-001/callbacks/+/state"
        );
        assert_eq!(
            t.classify("ccedge/v1/announcements/outage-1"),
            Inbound::Announcement("outage-1")
        );
        assert_eq!(t.classify("ccedge/v1/audio/abc"), Inbound::Audio("abc"));
        assert_eq!(t.classify(&t.events_ack()), Inbound::Ack);
        assert_eq!(t.classify(&t.events_replay()), Inbound::Replay);
        assert_eq!(
            t.classify(&t.callback_state("cb-7")),
            Inbound::CallbackState("cb-7")
        );
        for other in [
            "ccedge/v1/announcements/a/b",
            "ccedge/v1/nodes/phl/pi-002/events/ack",
            "ccedge/v1/nodes/phl/pi-001/callbacks//state",
            "ccedge/v1/nodes/phl/pi-001/events",
            "ccedge/v1x/audio/abc",
            "other",
        ] {
            assert_eq!(t.classify(other), Inbound::Other, "{other}");
        }
    }
}
