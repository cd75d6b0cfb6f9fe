//! Every capacity in the core, in one place.
//!
//! Collections in `shared` are `heapless` with these capacities; a full collection is an error
//! value the caller handles, never a panic. Changing a number here changes the memory budget
//! (see the crate docs and the `size_of` tests).

// ---- numbers and identifiers --------------------------------------------------------------

/// Longest E.164 number in digits (ITU-T E.164: 15), without the leading `+`.
pub const E164_MAX_DIGITS: usize = 15;
/// Longest identifier accepted from the CRM (announcement id, callback id), bytes.
pub const ID_MAX: usize = 64;

// ---- SIP ----------------------------------------------------------------------------------

/// Largest SIP message the node accepts (a UDP datagram or one message framed on a stream);
/// a bigger one is answered 513 when its start can be read. Carrier and SBC INVITEs of
/// 1.5–8 kB are ordinary, so this leaves room above the largest of them.
pub const SIP_MAX_DATAGRAM: usize = 16_384;
/// Most header fields one SIP message may carry; more is answered 513. A large SBC INVITE
/// (16 Vias, 8 Record-Routes, P-Asserted-Identity, Diversion, History-Info …) has about 60.
pub const SIP_MAX_HEADERS: usize = 128;
/// Most Via header values kept for a response (one per proxy on the way, RFC 3261 §8.2.6.2).
pub const SIP_MAX_VIAS: usize = 16;
/// Most Record-Route values kept as a dialog's route set (RFC 3261 §12.1.1).
pub const SIP_MAX_ROUTES: usize = 8;
/// Longest Call-ID kept in dialog state, bytes.
pub const SIP_CALL_ID_MAX: usize = 256;
/// Longest tag kept in dialog state, bytes.
pub const SIP_TAG_MAX: usize = 64;
/// Longest Via branch kept in transaction state, bytes.
pub const SIP_BRANCH_MAX: usize = 64;
/// Longest URI kept in dialog state (remote target, From/To URI), bytes.
pub const SIP_URI_MAX: usize = 160;
/// Longest header value copied into dialog state (a From/To/Via value), bytes.
pub const SIP_HEADER_VALUE_MAX: usize = 256;

// ---- SDP and RTP --------------------------------------------------------------------------

/// Most payload types read from one `m=audio` line (a codec-rich SBC offer lists a dozen or
/// more, and telephone-event often comes last).
pub const SDP_MAX_FORMATS: usize = 32;
/// Most `m=` sections looked at in one offer; every one but the audio stream is declined with
/// port 0. An offer with more is answered 488.
pub const SDP_MAX_MEDIA: usize = 8;
/// Bytes of one 20 ms G.711 frame at 8 kHz.
pub const G711_FRAME_BYTES: usize = 160;

// ---- IVR ----------------------------------------------------------------------------------

/// Most prompts in one playlist the IVR asks the shell to play.
pub const IVR_MAX_PLAYLIST: usize = 40;
/// Most announcements played to one caller before the menu.
pub const IVR_MAX_ANNOUNCEMENTS_PER_CALL: usize = 4;
/// Most languages a node offers its callers (`ivr.languages`); each after the first has its
/// own key ([`crate::ivr::language_key`]).
pub const MAX_LANGUAGES: usize = 4;
/// Most entries of `ivr.language_by_dialled` (dialled number → language).
pub const MAX_LANGUAGE_BY_DIALLED: usize = 64;

// ---- announcements, callbacks, events -------------------------------------------------------

/// Most announcements known to a node at once (active, pending, scheduled).
pub const MAX_ANNOUNCEMENTS: usize = 32;
/// Most scope entries of each kind (sites, dialled, caller prefixes) in one announcement.
pub const MAX_SCOPE_ENTRIES: usize = 8;
/// Most callbacks waiting in a node's local queue.
pub const CALLBACK_QUEUE_CAPACITY: usize = 256;
/// Most events one call produces before its events are only counted.
pub const MAX_EVENTS_PER_CALL: u32 = 4096;

// ---- IVR flow (added by the `ivr` module) -------------------------------------------------

/// Most keys held while a caller keys a callback number (15 E.164 digits plus one leading
/// trunk `0`; a number keyed with the `00` international prefix may use at most 14 digits).
pub const IVR_MAX_KEYED_DIGITS: usize = 16;
/// Most outputs one [`crate::ivr::Ivr`] keeps queued for the shell between drains; the shell
/// drains after every `handle_*`, and one step queues at most a handful.
pub const IVR_MAX_PENDING_OUTPUTS: usize = 16;

// ---- calls (added by the `call` module) ---------------------------------------------------

/// Outputs one call keeps queued between drains (media commands and compact events; IVR
/// playlists are produced on demand and never queued).
pub const CALL_MAX_PENDING: usize = 8;

// ---- DTMF (added by the g711/dtmf module) ---------------------------------------------------

/// Most in-band DTMF keys detected and not yet polled; a further key is dropped with an error.
pub const DTMF_INBAND_OUTPUT_MAX: usize = 4;

// ---- SIP serializer and UAS dialog (sip::emit, sip::uas, sip::endpoint) ---------------------

/// Largest SDP body a dialog keeps for retransmitting its 2xx, bytes.
pub const SIP_BODY_MAX: usize = 320;
/// Bytes of the per-dialog string arena: Call-ID, From, To, the INVITE's Vias, the route set,
/// the remote target, a pending re-INVITE's Vias, a REFER target and the Vias of responses
/// waiting to be sent. Sized by what real INVITEs carry (16 Vias of about 100 bytes, 8
/// Record-Routes, 80-byte Call-IDs, display names), not by a memory budget: an INVITE whose
/// values do not fit is refused with 513 by the node, so this must hold every INVITE a
/// gateway or SBC really sends. The INVITE's Vias are released once its transaction ends.
pub const SIP_DIALOG_ARENA: usize = 4096;
/// Responses to in-dialog requests one dialog queues before the shell drains them.
pub const SIP_DIALOG_PENDING: usize = 2;
/// Events one dialog queues before the shell drains them.
pub const SIP_DIALOG_EVENTS: usize = 4;
/// A buffer of this size always holds any message a `sip::uas::Dialog` emits (given `Config`
/// strings under 200 bytes each): every arena value, the body and the fixed headers.
/// `sip::endpoint` echoes the request, so it may need the request's size plus 512 bytes.
pub const SIP_EMIT_MAX: usize = SIP_DIALOG_ARENA + SIP_BODY_MAX + 1024;

// ---- models: announce / callback / event (added by the `announce`, `callback`, `event`
// ---- modules; kept together at the end of the file) ---------------------------------------

/// Longest site name kept in an announcement's scope (`phl`), bytes.
pub const SITE_MAX: usize = 32;
/// Longest language tag kept on an announcement (`en`, `pt-BR`), bytes.
pub const LANGUAGE_MAX: usize = 16;
/// Announcement versions kept readable after they were replaced, withdrawn or pruned, so a call
/// that is still playing one can resolve its handle.
pub const ANNOUNCE_RETIRED: usize = 8;
/// Previous versions kept playing while the version that replaced them waits for its audio
/// (one per announcement id; see `announce`'s module docs, "Replacement").
pub const ANNOUNCE_FALLBACKS: usize = 8;
/// Audio hashes the announcement set remembers as present in the local cache.
pub const ANNOUNCE_AUDIO_KNOWN: usize = 2 * MAX_ANNOUNCEMENTS;
/// Announcement events queued between two drains of `poll_output`.
pub const ANNOUNCE_EVENT_QUEUE: usize = 2 * MAX_ANNOUNCEMENTS + 8;
/// Default outbox capacity in events (the shell's disk store holds the payloads).
pub const OUTBOX_CAPACITY: u64 = 100_000;
/// Most events published and not yet PUBACKed at once (at most 64: a `u64` bitmap tracks them).
pub const OUTBOX_MAX_IN_FLIGHT: u32 = 64;
/// Per-node `seq` numbers reserved per durable high-water write.
pub const SEQ_RESERVE_BLOCK: u64 = 1_000;
/// Time checkpoints kept for the outbox retention rule.
pub const OUTBOX_RETENTION_MARKS: usize = 16;
/// Gap reports (`seq.skipped`) queued between two drains of the outbox's `poll_output`.
pub const OUTBOX_SKIP_QUEUE: usize = 16;
