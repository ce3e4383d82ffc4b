//! The gossip datagram: framing, sealing and the checks that run before any
//! byte of a peer's packet is parsed.
//!
//! ```text
//! sealed v1:  "ARL" 0x02 | sent_ms u64 BE | nonce [24] | XChaCha20-Poly1305(packet) + tag [16]
//!             associated data: the cluster name, then the 36 header bytes
//! sealed v2:  "ARL" 0x03 | sent_ms u64 BE | nonce [24] | XChaCha20-Poly1305(ext_len u16 BE | ext | packet) + tag
//! unsealed:   "ARL" 0x01 | name_len u8 | cluster name | packet_len u16 BE | packet | zero padding
//!             [| ext | ext_len u16 BE | marker [4]]   (the tail of the padding)
//! marker:     0xA7 'v' pmin pmax — the protocol versions the sender speaks
//! ext:        (type u8 | len u8 | value)*  — type 1: the sender's software version,
//!             type 2: the layout of the packet's identities (3; absent: 1)
//! ```
//!
//! **Versions.** Version 1 is the wire of Arlen up to the first versioned
//! release; it has no version field, and its readers ignore the nonce's
//! contents and an unsealed datagram's padding. That is where a newer node
//! says which versions it speaks (the marker: the first four bytes of a
//! sealed datagram's nonce, the last four of an unsealed one's padding), so
//! every datagram of every version carries its sender's range, and a version-1
//! reader never sees anything it does not know. A node sends a peer the
//! highest version both speak: version 1 (with the marker) until the peer's
//! marker said more. Version 2 adds the extension block (sealed: inside the
//! seal; unsealed: in the padding's tail, which version 1 ignores); unknown
//! extension types are skipped, so later fields need no new version. Version
//! 3 is version 2's envelope around a packet whose identities carry what each
//! member says of itself (software version, zone: layout 3, see
//! `identity.rs`); the extension says so (type 2), and a datagram whose
//! extension does not fit goes out in layout 1. The golden-byte tests pin
//! every layout.
//!
//! Every datagram is at most [`MAX_DATAGRAM`] bytes (a sealed version-2 one
//! [`MAX_EXTENSION`] more, within an Ethernet MTU); a larger one is refused
//! before anything else is looked at. Nothing is compressed, so a datagram's
//! size is the most a packet can be. The first key seals, any key opens
//! (rotation without restart). A sealed datagram is refused when its
//! `sent_ms` lies more than [`REPLAY_WINDOW`] behind this node's clock or
//! more than [`FUTURE_WINDOW`] ahead of it, and within that window it is
//! accepted once: [`ReplayGuard`] remembers every accepted nonce until its
//! datagram has left the window (see `ARCHITECTURE.md`, "Gossip trust").
//! Unsealed datagrams are padded to
//! the maximum, so that the anti-amplification rule (a reply to an unsealed
//! datagram is at most its size) never starves an honest unsealed cluster;
//! unsealed gossip is for development and for the steps of a key rollout.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

use chacha20poly1305::aead::AeadInOut as _;
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};

/// Largest datagram sent or accepted, headers included (below a LAN MTU).
pub(crate) const MAX_DATAGRAM: usize = 1400;
/// The extension block of a version-2 datagram, its length included, at most
/// (1400 + 72 + 28 bytes of IPv4 and UDP headers = one Ethernet MTU).
pub(crate) const MAX_EXTENSION: usize = 72;
/// The protocol versions this build speaks.
pub(crate) const PROTOCOL_MIN: u8 = 1;
pub(crate) const PROTOCOL_MAX: u8 = 3;
/// The first version whose packets carry identities in layout 3.
pub(crate) const PROTOCOL_IDENTITY_META: u8 = 3;
/// What a sender that says nothing about its versions speaks.
pub(crate) const PROTOCOL_UNMARKED: u8 = 1;
/// The longest software version a member may gossip, in bytes.
pub(crate) const MAX_SOFTWARE_BYTES: usize = super::identity::MAX_SOFTWARE_BYTES;
const MARKER_TAG: [u8; 2] = [0xA7, b'v'];
const MARKER_BYTES: usize = 4;
const EXT_SOFTWARE: u8 = 1;
const EXT_LAYOUT: u8 = 2;
/// The extension of a version-3 datagram: its packet is in layout 3 (the
/// sender's software is in its identity).
pub(crate) const LAYOUT_3_EXTENSION: [u8; 3] = [EXT_LAYOUT, 1, 3];
/// How far a sealed datagram's send time may lie behind the receiver's clock
/// (transit, and a sender's clock behind this one's).
pub(crate) const REPLAY_WINDOW: Duration = Duration::from_secs(60);
/// How far a sealed datagram's send time may lie ahead of the receiver's
/// clock: the clock skew sealed gossip tolerates. Shorter than the past side,
/// so a datagram is never acceptable for longer than
/// `REPLAY_WINDOW + FUTURE_WINDOW` after it was sealed.
pub(crate) const FUTURE_WINDOW: Duration = Duration::from_secs(10);
/// Nonces [`ReplayGuard`] remembers at most. At 40 bytes an entry plus the
/// table's slack this is under 4 MiB; it covers the whole window up to
/// `REPLAY_CAPACITY / (REPLAY_WINDOW + FUTURE_WINDOW)` ≈ 930 sealed datagrams
/// a second (a node of a 1,000-member cluster receives about 20).
pub(crate) const REPLAY_CAPACITY: usize = 65_536;
/// Unsealed datagrams are padded to this size: every reply fits in the
/// size of what it answers.
pub(crate) const MIN_UNSEALED: usize = MAX_DATAGRAM;
/// A reply to an unsealed datagram may be this many times its size: no
/// amplification.
pub(crate) const AMPLIFICATION_FACTOR: usize = 1;
/// Cluster names longer than this cannot gossip unsealed.
pub(crate) const MAX_CLUSTER_NAME_BYTES: usize = 128;

const MAGIC: &[u8; 3] = b"ARL";
const KIND_UNSEALED: u8 = 1;
const KIND_SEALED: u8 = 2;
const KIND_SEALED_V2: u8 = 3;
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
const SEALED_HEADER: usize = 4 + 8 + NONCE_BYTES;

/// Whether unsealed datagrams are sent or accepted while keys are set: the
/// switch for turning sealing on in a running cluster
/// (`cluster.gossip.unsealedTraffic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnsealedTraffic {
    /// Send sealed, accept only sealed (the default with keys).
    Refuse,
    /// Send sealed, accept both.
    Accept,
    /// Send unsealed, accept both.
    Send,
}

/// Why a datagram was dropped before foca saw it. Each has a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Larger than [`MAX_DATAGRAM`].
    Oversized,
    /// Not an Arlen gossip datagram, or its framing is inconsistent.
    Malformed,
    /// Unsealed while sealing is required.
    Unsealed,
    /// Unsealed, for another cluster.
    OtherCluster,
    /// No configured key opens it (wrong key, another cluster, tampered), or
    /// it is sealed and this node has no keys.
    BadSeal,
    /// Sealed, but sent outside the replay window.
    Stale,
    /// Sealed and inside the window, but already accepted once.
    Replayed,
    /// The packet inside did not decode, or foca refused it.
    Undecodable,
    /// It would add members beyond `cluster.gossip.maxMembers`.
    MemberLimit,
    /// A reply that would exceed the anti-amplification limit (outbound).
    Amplification,
    /// It names a member whose generation lies beyond this node's clock
    /// plus [`REPLAY_WINDOW`] (a forged or badly skewed identity that would
    /// otherwise hold an address for ever).
    FutureGeneration,
    /// Unsealed beside sealed traffic (`unsealedTraffic = accept`), from a
    /// sender no sealed datagram vouched for (or telling this node it is down).
    Unvouched,
    /// From a newcomer beyond the join budget (rate or ceiling): held back
    /// until there is room.
    HeldBack,
}

impl Rejection {
    pub const ALL: [Rejection; 13] = [
        Rejection::Oversized,
        Rejection::Malformed,
        Rejection::Unsealed,
        Rejection::OtherCluster,
        Rejection::BadSeal,
        Rejection::Stale,
        Rejection::Replayed,
        Rejection::Undecodable,
        Rejection::MemberLimit,
        Rejection::Amplification,
        Rejection::FutureGeneration,
        Rejection::Unvouched,
        Rejection::HeldBack,
    ];

    /// The metric label and log word.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::Oversized => "oversized",
            Rejection::Malformed => "malformed",
            Rejection::Unsealed => "unsealed",
            Rejection::OtherCluster => "other_cluster",
            Rejection::BadSeal => "bad_seal",
            Rejection::Stale => "stale",
            Rejection::Replayed => "replayed",
            Rejection::Undecodable => "undecodable",
            Rejection::MemberLimit => "member_limit",
            Rejection::Amplification => "amplification",
            Rejection::FutureGeneration => "future_generation",
            Rejection::Unvouched => "unvouched",
            Rejection::HeldBack => "held_back",
        }
    }

    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// An opened datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Opened {
    pub packet: Vec<u8>,
    /// What identifies a sealed datagram for [`ReplayGuard`]; `None` when unsealed.
    pub stamp: Option<Stamp>,
    /// What the sender said about itself in the envelope.
    pub advert: Advert,
    /// The layout of the packet's identities: 3, or 1 (see `identity.rs`).
    pub layout: u8,
}

/// What a sender says about itself in every datagram's envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Advert {
    /// The highest protocol version it speaks (1 when it says nothing).
    pub max_version: u8,
    /// Its software version, from a version-2 extension.
    pub software: Option<String>,
}

impl Default for Advert {
    fn default() -> Self {
        Self { max_version: PROTOCOL_UNMARKED, software: None }
    }
}

/// A marker naming the versions `min..=max` (a test speaks as an older build).
#[cfg(test)]
pub(crate) fn marker_of(min: u8, max: u8) -> [u8; MARKER_BYTES] {
    [MARKER_TAG[0], MARKER_TAG[1], min, max]
}

/// The marker: the versions this build speaks.
fn marker() -> [u8; MARKER_BYTES] {
    [MARKER_TAG[0], MARKER_TAG[1], PROTOCOL_MIN, PROTOCOL_MAX]
}

/// The highest version a marker names, if `bytes` is one.
fn read_marker(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [a, b, min, max] if [*a, *b] == MARKER_TAG && min <= max => Some(*max),
        _ => None,
    }
}

/// The extension block: this node's software version (cut to the bound).
pub(crate) fn extension(software: &str) -> Vec<u8> {
    // Cut at a character boundary: a peer refuses a block that is not UTF-8.
    let cut = (0..=software.len().min(MAX_SOFTWARE_BYTES)).rev().find(|i| software.is_char_boundary(*i)).unwrap_or(0);
    let value = &software.as_bytes()[..cut];
    let mut ext = vec![EXT_SOFTWARE, u8::try_from(value.len()).unwrap_or(u8::MAX)];
    ext.extend_from_slice(value);
    ext
}

/// Reads an extension block (the software version, the packet's layout);
/// unknown types are skipped, a malformed block is refused.
fn read_extension(mut ext: &[u8]) -> Result<(Option<String>, u8), Rejection> {
    let mut software = None;
    let mut layout = 1;
    while !ext.is_empty() {
        let [kind, len, rest @ ..] = ext else { return Err(Rejection::Malformed) };
        let value = rest.get(..usize::from(*len)).ok_or(Rejection::Malformed)?;
        if *kind == EXT_SOFTWARE {
            let text = std::str::from_utf8(value).map_err(|_| Rejection::Malformed)?;
            if text.len() > MAX_SOFTWARE_BYTES || text.chars().any(char::is_control) {
                return Err(Rejection::Malformed);
            }
            software = Some(text.to_owned());
        }
        if *kind == EXT_LAYOUT {
            layout = match value {
                [3] => 3,
                _ => return Err(Rejection::Malformed),
            };
        }
        ext = &rest[usize::from(*len)..];
    }
    Ok((software, layout))
}

impl Opened {
    pub(crate) fn sealed(&self) -> bool {
        self.stamp.is_some()
    }
}

/// An authenticated datagram's send time and nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub sent_ms: u64,
    /// The nonce's first 128 bits: random per datagram, and authenticated.
    pub nonce: u128,
}

/// Every sealed datagram accepted within the window, so that none is
/// accepted twice: a relay without the key that recorded a node's acks
/// cannot answer probes with them after the node died.
///
/// Memory is bounded by [`REPLAY_CAPACITY`]. When a flood (only a key holder
/// can make one: nothing else opens) would exceed it, the oldest nonce is
/// dropped and everything sent at or before it is refused from then on: the
/// window shrinks, it never lets a replay through.
#[derive(Debug)]
pub(crate) struct ReplayGuard {
    seen: HashSet<u128>,
    /// Each nonce with the time after which [`Sealing::open`] refuses its
    /// datagram as stale anyway.
    expiries: BinaryHeap<Reverse<(u64, u128)>>,
    /// Datagrams sent at or before this time are refused (raised by eviction).
    floor_ms: u64,
    capacity: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::with_capacity(REPLAY_CAPACITY)
    }
}

impl ReplayGuard {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self { seen: HashSet::new(), expiries: BinaryHeap::new(), floor_ms: 0, capacity: capacity.max(1) }
    }

    /// Accepts a stamp the first time it is seen within the window.
    pub(crate) fn admit(&mut self, stamp: Stamp, now_ms: u64) -> Result<(), Rejection> {
        let past = u64::try_from(REPLAY_WINDOW.as_millis()).unwrap_or(u64::MAX);
        while let Some(Reverse((expiry, nonce))) = self.expiries.peek().copied() {
            if expiry >= now_ms {
                break;
            }
            self.expiries.pop();
            self.seen.remove(&nonce);
        }
        if stamp.sent_ms <= self.floor_ms {
            return Err(Rejection::Stale);
        }
        if self.seen.contains(&stamp.nonce) {
            return Err(Rejection::Replayed);
        }
        if self.seen.len() >= self.capacity {
            if let Some(Reverse((expiry, nonce))) = self.expiries.pop() {
                self.seen.remove(&nonce);
                self.floor_ms = self.floor_ms.max(expiry.saturating_sub(past));
            }
            if stamp.sent_ms <= self.floor_ms {
                return Err(Rejection::Stale);
            }
        }
        self.seen.insert(stamp.nonce);
        self.expiries.push(Reverse((stamp.sent_ms.saturating_add(past), stamp.nonce)));
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

/// The keys and rules one node seals and opens with.
#[derive(Clone)]
pub(crate) struct Sealing {
    cluster: Vec<u8>,
    keys: Vec<XChaCha20Poly1305>,
    unsealed: UnsealedTraffic,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing").field("keys", &self.keys.len()).field("unsealed", &self.unsealed).finish()
    }
}

impl Sealing {
    pub(crate) fn new(cluster: &str, keys: &[[u8; 32]], unsealed: UnsealedTraffic) -> Self {
        Self {
            cluster: cluster.as_bytes().to_vec(),
            keys: keys.iter().map(|key| XChaCha20Poly1305::new(&(*key).into())).collect(),
            unsealed,
        }
    }

    /// True while unsealed datagrams are accepted beside sealed ones and
    /// this node sends sealed (`accept`): what arrives unsealed is then held
    /// to the rollout rule (see `admission.rs`).
    pub(crate) fn restricts_unsealed(&self) -> bool {
        !self.keys.is_empty() && self.unsealed == UnsealedTraffic::Accept
    }

    /// What to say, loudly, while a key rollout leaves the door open:
    /// keys are set but unsealed datagrams are accepted.
    pub(crate) fn rollout_warning(&self) -> Option<&'static str> {
        match (self.keys.is_empty(), self.unsealed) {
            (true, _) | (false, UnsealedTraffic::Refuse) => None,
            (false, UnsealedTraffic::Accept) => Some(
                "unsealed gossip datagrams are accepted (cluster.gossip.unsealedTraffic = accept): anyone who can reach the gossip port can refresh members sealed traffic vouched for; finish the key rollout with `refuse`",
            ),
            (false, UnsealedTraffic::Send) => Some(
                "gossip is sent unsealed and unsealed datagrams are accepted (cluster.gossip.unsealedTraffic = send): gossip is not authenticated; finish the key rollout with `accept`, then `refuse`",
            ),
        }
    }

    /// True when this node sends sealed datagrams.
    pub(crate) fn seals(&self) -> bool {
        !self.keys.is_empty() && self.unsealed != UnsealedTraffic::Send
    }

    /// The largest foca packet that fits one datagram either way.
    pub(crate) fn max_packet(cluster: &str) -> usize {
        let unsealed_overhead = 4 + 1 + cluster.len().min(MAX_CLUSTER_NAME_BYTES) + 2;
        MAX_DATAGRAM - unsealed_overhead.max(SEALED_HEADER + TAG_BYTES)
    }

    /// Whether a datagram of `version` framing `packet_len` bytes carries an
    /// extension block of `ext_len` bytes (else it goes without one): the
    /// rule [`Sealing::seal_for`] follows. Sealed, from version 2 on; unsealed,
    /// whenever it fits the padding's tail (version 1 ignores the tail).
    pub(crate) fn carries_extension(&self, packet_len: usize, ext_len: usize, version: u8) -> bool {
        if ext_len + 2 > MAX_EXTENSION {
            return false;
        }
        if !self.seals() {
            let name = self.cluster.len().min(MAX_CLUSTER_NAME_BYTES);
            return 4 + 1 + name + 2 + packet_len + ext_len + 2 + MARKER_BYTES <= MIN_UNSEALED;
        }
        version >= 2
    }

    /// Frames (and, with keys, seals) one packet of layout 3 in the newest
    /// version (what tests, the forge and the fuzzer send).
    #[cfg(any(test, feature = "forge"))]
    pub(crate) fn seal(&self, packet: &[u8], now_ms: u64) -> Vec<u8> {
        self.seal_for(packet, now_ms, PROTOCOL_MAX, &LAYOUT_3_EXTENSION)
    }

    /// Frames (and, with keys, seals) one foca packet in `version` (the
    /// highest both sides speak), with the extension block `ext` where the
    /// version has one.
    pub(crate) fn seal_for(&self, packet: &[u8], now_ms: u64, version: u8, ext: &[u8]) -> Vec<u8> {
        let mut nonce: [u8; NONCE_BYTES] = rand::random();
        nonce[..MARKER_BYTES].copy_from_slice(&marker());
        self.seal_with_nonce(packet, now_ms, version, ext, nonce)
    }

    /// [`Sealing::seal_for`] with a chosen nonce (its first four bytes the
    /// marker): tests pin layouts and speak as older builds with it.
    pub(crate) fn seal_with_nonce(
        &self,
        packet: &[u8],
        now_ms: u64,
        version: u8,
        ext: &[u8],
        nonce: [u8; NONCE_BYTES],
    ) -> Vec<u8> {
        let ext = if self.carries_extension(packet.len(), ext.len(), version) { ext } else { &[] };
        if !self.seals() {
            let name = &self.cluster[..self.cluster.len().min(MAX_CLUSTER_NAME_BYTES)];
            let mut out = Vec::with_capacity(MIN_UNSEALED.max(packet.len() + name.len() + 7));
            out.extend_from_slice(MAGIC);
            out.push(KIND_UNSEALED);
            out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(name);
            out.extend_from_slice(&u16::try_from(packet.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(packet);
            // The tail of the padding: the extension (when it fits), its
            // length, the marker. Version 1 reads none of it.
            if out.len() + ext.len() + 2 + MARKER_BYTES <= MIN_UNSEALED {
                out.resize(MIN_UNSEALED - ext.len() - 2 - MARKER_BYTES, 0);
                out.extend_from_slice(ext);
                out.extend_from_slice(&u16::try_from(ext.len()).unwrap_or(0).to_be_bytes());
                out.extend_from_slice(&marker());
            } else if out.len() < MIN_UNSEALED {
                out.resize(MIN_UNSEALED, 0);
            }
            return out;
        }
        let v2 = version >= 2;
        let mut out = Vec::with_capacity(SEALED_HEADER + 2 + ext.len() + packet.len() + TAG_BYTES);
        out.extend_from_slice(MAGIC);
        out.push(if v2 { KIND_SEALED_V2 } else { KIND_SEALED });
        out.extend_from_slice(&now_ms.to_be_bytes());
        out.extend_from_slice(&nonce);
        let aad = self.associated_data(&out);
        let mut body = Vec::with_capacity(2 + ext.len() + packet.len() + TAG_BYTES);
        if v2 {
            body.extend_from_slice(&u16::try_from(ext.len()).unwrap_or(0).to_be_bytes());
            body.extend_from_slice(ext);
        }
        body.extend_from_slice(packet);
        self.keys[0]
            .encrypt_in_place(&XNonce::from(nonce), &aad, &mut body)
            .expect("XChaCha20-Poly1305 seals any datagram-sized packet");
        out.extend_from_slice(&body);
        out
    }

    /// Checks and opens one datagram. Nothing of it is parsed before its size
    /// is bounded, and nothing of a sealed one before it is authenticated.
    pub(crate) fn open(&self, datagram: &[u8], now_ms: u64) -> Result<Opened, Rejection> {
        let bound = match datagram.get(3) {
            Some(&KIND_SEALED_V2) => MAX_DATAGRAM + MAX_EXTENSION,
            _ => MAX_DATAGRAM,
        };
        if datagram.len() > bound {
            return Err(Rejection::Oversized);
        }
        if datagram.len() < 4 || &datagram[..3] != MAGIC {
            return Err(Rejection::Malformed);
        }
        match datagram[3] {
            KIND_UNSEALED => self.open_unsealed(&datagram[4..]),
            KIND_SEALED => self.open_sealed(datagram, now_ms, false),
            KIND_SEALED_V2 => self.open_sealed(datagram, now_ms, true),
            _ => Err(Rejection::Malformed),
        }
    }

    fn open_unsealed(&self, rest: &[u8]) -> Result<Opened, Rejection> {
        if !self.keys.is_empty() && self.unsealed == UnsealedTraffic::Refuse {
            return Err(Rejection::Unsealed);
        }
        let (&name_len, rest) = rest.split_first().ok_or(Rejection::Malformed)?;
        let name_len = usize::from(name_len);
        if rest.len() < name_len + 2 {
            return Err(Rejection::Malformed);
        }
        let (name, rest) = rest.split_at(name_len);
        if name != &self.cluster[..self.cluster.len().min(MAX_CLUSTER_NAME_BYTES)] {
            return Err(Rejection::OtherCluster);
        }
        let packet_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let packet = rest[2..].get(..packet_len).ok_or(Rejection::Malformed)?;
        let padding = &rest[2 + packet_len..];
        let (advert, layout) = read_tail(padding)?;
        Ok(Opened { packet: packet.to_vec(), stamp: None, advert, layout })
    }

    fn open_sealed(&self, datagram: &[u8], now_ms: u64, v2: bool) -> Result<Opened, Rejection> {
        if datagram.len() < SEALED_HEADER + TAG_BYTES {
            return Err(Rejection::Malformed);
        }
        if self.keys.is_empty() {
            return Err(Rejection::BadSeal);
        }
        let (header, body) = datagram.split_at(SEALED_HEADER);
        let nonce: [u8; NONCE_BYTES] = header[12..].try_into().map_err(|_| Rejection::Malformed)?;
        let nonce = XNonce::from(nonce);
        let aad = self.associated_data(header);
        let opened = self.keys.iter().find_map(|key| {
            let mut plain = body.to_vec();
            key.decrypt_in_place(&nonce, &aad, &mut plain).ok().map(|()| plain)
        });
        let mut packet = opened.ok_or(Rejection::BadSeal)?;
        // Only an authentic datagram's time and extension are worth reading.
        let sent_ms = u64::from_be_bytes(header[4..12].try_into().map_err(|_| Rejection::Malformed)?);
        let past = u64::try_from(REPLAY_WINDOW.as_millis()).unwrap_or(u64::MAX);
        let future = u64::try_from(FUTURE_WINDOW.as_millis()).unwrap_or(u64::MAX);
        if sent_ms < now_ms.saturating_sub(past) || sent_ms > now_ms.saturating_add(future) {
            return Err(Rejection::Stale);
        }
        let mut advert =
            Advert { max_version: read_marker(&header[12..16]).unwrap_or(PROTOCOL_UNMARKED), software: None };
        let mut layout = 1;
        if v2 {
            let [high, low, rest @ ..] = packet.as_slice() else { return Err(Rejection::Malformed) };
            let ext_len = usize::from(u16::from_be_bytes([*high, *low]));
            let ext = rest.get(..ext_len).ok_or(Rejection::Malformed)?;
            (advert.software, layout) = read_extension(ext)?;
            packet.drain(..2 + ext_len);
        }
        // The nonce's last 16 bytes: random in every version (a marker fills the first four).
        let nonce = u128::from_be_bytes(header[20..36].try_into().map_err(|_| Rejection::Malformed)?);
        Ok(Opened { packet, stamp: Some(Stamp { sent_ms, nonce }), advert, layout })
    }

    fn associated_data(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = Vec::with_capacity(self.cluster.len() + header.len());
        aad.extend_from_slice(&self.cluster);
        aad.extend_from_slice(header);
        aad
    }
}

/// What the tail of an unsealed datagram's padding says: the marker, and
/// the extension before it. Padding without a marker says nothing (version 1).
fn read_tail(padding: &[u8]) -> Result<(Advert, u8), Rejection> {
    let Some(split) = padding.len().checked_sub(MARKER_BYTES) else { return Ok((Advert::default(), 1)) };
    let Some(max_version) = read_marker(&padding[split..]) else { return Ok((Advert::default(), 1)) };
    let before = &padding[..split];
    let Some(len_at) = before.len().checked_sub(2) else { return Err(Rejection::Malformed) };
    let ext_len = usize::from(u16::from_be_bytes([before[len_at], before[len_at + 1]]));
    let ext_at = len_at.checked_sub(ext_len).ok_or(Rejection::Malformed)?;
    let (software, layout) = read_extension(&before[ext_at..len_at])?;
    Ok((Advert { max_version, software }, layout))
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: [u8; 32] = [1; 32];
    const K2: [u8; 32] = [2; 32];
    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn sealed_datagrams_open_with_any_listed_key_and_nothing_else() {
        let sender = Sealing::new("alpha", &[K1], UnsealedTraffic::Refuse);
        let datagram = sender.seal(b"hello", NOW);
        assert!(datagram.len() <= MAX_DATAGRAM);
        let rotated = Sealing::new("alpha", &[K2, K1], UnsealedTraffic::Refuse);
        let opened = rotated.open(&datagram, NOW).unwrap();
        assert_eq!(opened.packet, b"hello");
        assert!(opened.sealed());
        assert_eq!(Sealing::new("alpha", &[K2], UnsealedTraffic::Refuse).open(&datagram, NOW), Err(Rejection::BadSeal));
        assert_eq!(Sealing::new("beta", &[K1], UnsealedTraffic::Refuse).open(&datagram, NOW), Err(Rejection::BadSeal));
        assert_eq!(Sealing::new("alpha", &[], UnsealedTraffic::Refuse).open(&datagram, NOW), Err(Rejection::BadSeal));
        let mut tampered = datagram.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(rotated.open(&tampered, NOW), Err(Rejection::BadSeal));
        let mut retimed = datagram;
        retimed[11] ^= 1;
        assert_eq!(rotated.open(&retimed, NOW), Err(Rejection::BadSeal), "the send time is authenticated");
    }

    #[test]
    fn sealed_datagrams_outside_the_replay_window_are_stale() {
        let sealing = Sealing::new("alpha", &[K1], UnsealedTraffic::Refuse);
        let past = u64::try_from(REPLAY_WINDOW.as_millis()).unwrap();
        let future = u64::try_from(FUTURE_WINDOW.as_millis()).unwrap();
        assert!(future < past, "the future side is the shorter one");
        let datagram = sealing.seal(b"x", NOW);
        assert!(sealing.open(&datagram, NOW + past).is_ok());
        assert_eq!(sealing.open(&datagram, NOW + past + 1), Err(Rejection::Stale));
        assert!(sealing.open(&datagram, NOW - future).is_ok());
        assert_eq!(sealing.open(&datagram, NOW - future - 1), Err(Rejection::Stale));
        // Stamped 55 s ahead (a clock far ahead, or a forger with the key):
        // refused while it is from the future; once its stamp is in the past it
        // is an ordinary datagram, accepted once (the replay guard's test).
        let ahead = sealing.seal(b"x", NOW + 55_000);
        for later in [0, 20_000, 44_999] {
            assert_eq!(sealing.open(&ahead, NOW + later), Err(Rejection::Stale), "{later} ms after it was sealed");
        }
    }

    #[test]
    fn a_sealed_datagram_is_accepted_once_within_the_window() {
        let sealing = Sealing::new("alpha", &[K1], UnsealedTraffic::Refuse);
        let mut guard = ReplayGuard::default();
        let datagram = sealing.seal(b"ack", NOW);
        let stamp = sealing.open(&datagram, NOW).unwrap().stamp.unwrap();
        assert_eq!(guard.admit(stamp, NOW), Ok(()));
        let past = u64::try_from(REPLAY_WINDOW.as_millis()).unwrap();
        for later in [1, 25_600, past] {
            let again = sealing.open(&datagram, NOW + later).unwrap().stamp.unwrap();
            assert_eq!(guard.admit(again, NOW + later), Err(Rejection::Replayed), "{later} ms later");
        }
        assert_eq!(sealing.open(&datagram, NOW + past + 1), Err(Rejection::Stale), "then the window refuses it");
        let other = sealing.open(&sealing.seal(b"ack", NOW), NOW).unwrap().stamp.unwrap();
        assert_eq!(guard.admit(other, NOW), Ok(()), "the same packet sealed again is a new datagram");
        // Entries leave with their window: the cache does not grow with time.
        for second in 0..300 {
            let at = NOW + second * 1000;
            let stamp = sealing.open(&sealing.seal(b"p", at), at).unwrap().stamp.unwrap();
            guard.admit(stamp, at).unwrap();
        }
        assert!(guard.len() <= 62, "{} nonces kept for a 60 s window at one a second", guard.len());
    }

    #[test]
    fn a_full_replay_cache_shrinks_the_window_and_never_admits_a_replay() {
        let sealing = Sealing::new("alpha", &[K1], UnsealedTraffic::Refuse);
        let mut guard = ReplayGuard::with_capacity(4);
        let stamps: Vec<Stamp> =
            (0..6).map(|i| sealing.open(&sealing.seal(b"x", NOW + i), NOW + 5).unwrap().stamp.unwrap()).collect();
        for stamp in &stamps {
            assert_eq!(guard.admit(*stamp, NOW + 5), Ok(()));
        }
        assert_eq!(guard.len(), 4);
        for stamp in &stamps {
            assert!(guard.admit(*stamp, NOW + 5).is_err(), "a replay of {stamp:?} after eviction");
        }
        let fresh = sealing.open(&sealing.seal(b"x", NOW + 6), NOW + 6).unwrap().stamp.unwrap();
        assert_eq!(guard.admit(fresh, NOW + 6), Ok(()), "fresh traffic still passes");
    }

    #[test]
    fn the_rollout_switch_governs_unsealed_traffic() {
        let open = Sealing::new("alpha", &[], UnsealedTraffic::Refuse);
        let unsealed = open.seal(b"hi", NOW);
        assert!(unsealed.len() >= MIN_UNSEALED, "unsealed datagrams are padded");
        let opened = open.open(&unsealed, NOW).unwrap();
        assert_eq!((opened.packet.as_slice(), opened.stamp), (&b"hi"[..], None));
        assert_eq!(
            Sealing::new("beta", &[], UnsealedTraffic::Refuse).open(&unsealed, NOW),
            Err(Rejection::OtherCluster)
        );
        assert_eq!(
            Sealing::new("alpha", &[K1], UnsealedTraffic::Refuse).open(&unsealed, NOW),
            Err(Rejection::Unsealed)
        );
        let accepting = Sealing::new("alpha", &[K1], UnsealedTraffic::Accept);
        assert!(accepting.seals());
        assert!(accepting.open(&unsealed, NOW).is_ok());
        let sending = Sealing::new("alpha", &[K1], UnsealedTraffic::Send);
        assert!(!sending.seals());
        assert!(sending.open(&accepting.seal(b"s", NOW), NOW).unwrap().sealed(), "send-unsealed still opens sealed");
    }

    #[test]
    fn size_and_framing_are_checked_first() {
        let sealing = Sealing::new("alpha", &[K1], UnsealedTraffic::Accept);
        assert_eq!(sealing.open(&vec![0; MAX_DATAGRAM + 1], NOW), Err(Rejection::Oversized));
        assert_eq!(sealing.open(b"", NOW), Err(Rejection::Malformed));
        assert_eq!(sealing.open(b"ARL\x09", NOW), Err(Rejection::Malformed));
        assert_eq!(sealing.open(b"ARL\x01\x05alp", NOW), Err(Rejection::Malformed));
        assert_eq!(sealing.open(b"ARL\x01\x05alpha\xff\xff", NOW), Err(Rejection::Malformed));
        assert_eq!(sealing.open(b"ARL\x02short", NOW), Err(Rejection::Malformed));
        assert!(Sealing::max_packet("alpha") + SEALED_HEADER + TAG_BYTES <= MAX_DATAGRAM);
        assert!(Sealing::max_packet(&"n".repeat(300)) + 4 + 1 + MAX_CLUSTER_NAME_BYTES + 2 <= MAX_DATAGRAM);
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Today's layouts, byte for byte: a change to any of them is a change
    /// of the wire, and must come with a version (see the module documentation).
    #[test]
    fn the_wire_layouts_are_pinned() {
        let sealed = Sealing::new("alpha", &[K1], UnsealedTraffic::Refuse);
        let nonce = [9u8; NONCE_BYTES];
        let v1 = sealed.seal_with_nonce(b"packet", NOW, 1, b"", nonce);
        assert_eq!(
            hex(&v1),
            "41524c020000018bcfe56800090909090909090909090909090909090909090909090909838cdcfd3bb21c3f4943fce2fe357c8732deda30cb6e",
            "sealed version 1"
        );
        let ext = extension("1.2.3+abc");
        let v2 = sealed.seal_with_nonce(b"packet", NOW, 2, &ext, nonce);
        assert_eq!(&v2[..4], b"ARL\x03");
        assert_eq!(hex(&v2[4..36]), hex(&v1[4..36]), "the same header");
        assert_eq!(v2.len(), v1.len() + 2 + ext.len());
        let unsealed = Sealing::new("alpha", &[], UnsealedTraffic::Refuse);
        let plain = unsealed.seal_with_nonce(b"packet", NOW, 1, &ext, nonce);
        assert_eq!(plain.len(), MIN_UNSEALED);
        assert_eq!(hex(&plain[..18]), "41524c0105616c70686100067061636b6574", "unsealed: name, length, packet");
        assert_eq!(hex(&plain[plain.len() - 17..]), "0109312e322e332b616263000ba7760103", "its tail");
        assert!(plain[18..plain.len() - 17].iter().all(|b| *b == 0), "zero padding between");
    }

    #[test]
    fn every_version_opens_and_says_who_sent_it() {
        let sealed = Sealing::new("alpha", &[K1], UnsealedTraffic::Refuse);
        let ext = extension("1.2.3+abc");
        for (version, software) in [(1, None), (2, Some("1.2.3+abc".to_owned()))] {
            let opened = sealed.open(&sealed.seal_for(b"packet", NOW, version, &ext), NOW).unwrap();
            assert_eq!(opened.packet, b"packet", "sealed version {version}");
            assert_eq!(opened.advert, Advert { max_version: PROTOCOL_MAX, software }, "sealed version {version}");
        }
        // Version 3: the extension says the packet is in layout 3.
        let opened = sealed.open(&sealed.seal_for(b"packet", NOW, 3, &LAYOUT_3_EXTENSION), NOW).unwrap();
        assert_eq!((opened.packet.as_slice(), opened.layout), (&b"packet"[..], 3));
        assert_eq!(sealed.open(&sealed.seal_for(b"packet", NOW, 2, &ext), NOW).unwrap().layout, 1);
        let unsealed = Sealing::new("alpha", &[], UnsealedTraffic::Refuse);
        assert_eq!(unsealed.open(&unsealed.seal(b"packet", NOW), NOW).unwrap().layout, 3);
        let opened = unsealed.open(&unsealed.seal_for(b"packet", NOW, 1, &ext), NOW).unwrap();
        assert_eq!(opened.advert, Advert { max_version: PROTOCOL_MAX, software: Some("1.2.3+abc".to_owned()) });
        // What version 1 sent (no marker, zero padding, a random nonce) says nothing.
        let old = sealed.seal_with_nonce(b"packet", NOW, 1, b"", [9; NONCE_BYTES]);
        assert_eq!(sealed.open(&old, NOW).unwrap().advert, Advert::default());
        let mut old_plain = unsealed.seal_with_nonce(b"packet", NOW, 1, b"", [9; NONCE_BYTES]);
        old_plain.truncate(18);
        old_plain.resize(MIN_UNSEALED, 0);
        assert_eq!(unsealed.open(&old_plain, NOW).unwrap().advert, Advert::default());
        // Unknown extension types are skipped; a malformed block is refused.
        let mut later = ext.clone();
        later.extend_from_slice(&[0x42, 2, 0xff, 0xff]);
        let opened = sealed.open(&sealed.seal_for(b"p", NOW, 2, &later), NOW).unwrap();
        assert_eq!(opened.advert.software.as_deref(), Some("1.2.3+abc"));
        // A version too long is cut at a character, never in one, so peers still read it.
        let long = format!("a{}", "é".repeat(MAX_SOFTWARE_BYTES));
        let opened = sealed.open(&sealed.seal_for(b"p", NOW, 2, &extension(&long)), NOW).unwrap();
        assert_eq!(opened.advert.software.map(|s| s.len()), Some(MAX_SOFTWARE_BYTES - 1));
        assert_eq!(sealed.open(&sealed.seal_for(b"p", NOW, 2, &[1, 9, b'x']), NOW), Err(Rejection::Malformed));
    }

    proptest::proptest! {
        /// The opener never panics and never accepts bytes it did not seal.
        #[test]
        fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
            let sealing = Sealing::new("alpha", &[K1, K2], UnsealedTraffic::Refuse);
            proptest::prop_assert!(sealing.open(&bytes, NOW).is_err());
            let accepting = Sealing::new("alpha", &[K1], UnsealedTraffic::Accept);
            if let Ok(opened) = accepting.open(&bytes, NOW) {
                proptest::prop_assert!(!opened.sealed());
                proptest::prop_assert!(opened.packet.len() <= bytes.len());
            }
        }
    }
}
