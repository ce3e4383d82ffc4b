//! Who a gossip member is, as foca sees it, and the bounded wire codec.
//!
//! A [`GossipId`] carries everything Arlen publishes about a node — its node
//! id, generation (new on every start), its gossip address, its HTTP URL and
//! its announced state — so a member can never be known without that
//! metadata. A node changes what it says about itself (draining, left) by
//! renewing its own identity (`seq` + 1); foca replaces the older identity at
//! the same address everywhere, and nobody else can produce a newer one of
//! ours that we would adopt: a node never takes its identity from the wire.
//!
//! Decoding is bounded: a datagram is at most [`super::seal::MAX_DATAGRAM`]
//! bytes before anything is parsed, strings have hard length limits, and the
//! schema is fixed (no free-form keys or values).

use std::net::SocketAddr;

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member, PostcardCodec};
use serde::{Deserialize, Serialize};

/// Longest node id a member may gossip, in bytes.
pub(crate) const MAX_NODE_ID_BYTES: usize = 128;
/// Longest HTTP URL a member may gossip, in bytes.
pub(crate) const MAX_HTTP_URL_BYTES: usize = 256;

/// What a node says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Announced {
    Alive,
    Draining,
    Left,
}

/// A member's identity on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "WireId")]
pub(crate) struct GossipId {
    pub node_id: String,
    /// Milliseconds since the epoch at process start: a restart is newer.
    pub generation: u64,
    /// Bumped each time the node renews its identity (state changes, rejoins).
    pub seq: u32,
    pub addr: SocketAddr,
    pub http_url: String,
    pub state: Announced,
}

/// The same fields, before validation.
#[derive(Deserialize)]
struct WireId {
    node_id: String,
    generation: u64,
    seq: u32,
    addr: SocketAddr,
    http_url: String,
    state: Announced,
}

/// Why an identity on the wire was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdentityError {
    #[error("node id longer than {MAX_NODE_ID_BYTES} bytes")]
    NodeIdTooLong,
    #[error("http url longer than {MAX_HTTP_URL_BYTES} bytes")]
    UrlTooLong,
    #[error("control characters in a member's node id or url")]
    ControlCharacters,
    #[error("a member without a node id")]
    NoNodeId,
    #[error("a member whose url is not http(s)")]
    NotHttp,
}

impl TryFrom<WireId> for GossipId {
    type Error = IdentityError;

    fn try_from(wire: WireId) -> Result<Self, Self::Error> {
        if wire.node_id.len() > MAX_NODE_ID_BYTES {
            return Err(IdentityError::NodeIdTooLong);
        }
        if wire.http_url.len() > MAX_HTTP_URL_BYTES {
            return Err(IdentityError::UrlTooLong);
        }
        if wire.node_id.chars().chain(wire.http_url.chars()).any(char::is_control) {
            return Err(IdentityError::ControlCharacters);
        }
        Ok(Self {
            node_id: wire.node_id,
            generation: wire.generation,
            seq: wire.seq,
            addr: wire.addr,
            http_url: wire.http_url,
            state: wire.state,
        })
    }
}

impl GossipId {
    /// The address-only identity used to announce to a seed whose identity is
    /// not known yet (foca accepts an `Announce` addressed to any identity at
    /// its address).
    pub(crate) fn seed(addr: SocketAddr) -> Self {
        Self { node_id: String::new(), generation: 0, seq: 0, addr, http_url: String::new(), state: Announced::Alive }
    }

    /// A member Arlen can count: it names itself and publishes its URL.
    pub(crate) fn check_complete(&self) -> Result<(), IdentityError> {
        if self.node_id.is_empty() {
            return Err(IdentityError::NoNodeId);
        }
        if !(self.http_url.starts_with("http://") || self.http_url.starts_with("https://")) {
            return Err(IdentityError::NotHttp);
        }
        Ok(())
    }

    /// This identity with another announced state (a newer identity).
    pub(crate) fn with_state(&self, state: Announced) -> Option<Self> {
        Some(Self { seq: self.seq.checked_add(1)?, state, ..self.clone() })
    }

    /// Whether this identity replaces `other` at their (shared) address.
    pub(crate) fn supersedes(&self, other: &Self) -> bool {
        self.precedence() > other.precedence()
    }

    /// This identity restarted past `predecessor`: the generation right
    /// after the predecessor's, everything else kept. Used when the node
    /// learns that an earlier incarnation at its address ranks above it
    /// (the wall clock went back across the restart): a restart must always
    /// supersede what it replaces. Only a generation is taken from the wire,
    /// never anything else of the identity.
    pub(crate) fn succeeding(&self, predecessor: &Self) -> Option<Self> {
        Some(Self { generation: predecessor.generation.checked_add(1)?, seq: 0, ..self.clone() })
    }

    fn precedence(&self) -> (u64, u32, Announced, &str, &str) {
        (self.generation, self.seq, self.state, &self.node_id, &self.http_url)
    }
}

impl foca::Identity for GossipId {
    type Addr = SocketAddr;

    /// After the cluster declared us down (a partition, a false accusation
    /// we could not refute in time), rejoin as a newer identity.
    fn renew(&self) -> Option<Self> {
        self.with_state(self.state)
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// At one address, a later start (generation) or a later renewal wins.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.precedence() > adversary.precedence()
    }
}

/// Why a foca packet did not decode.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("undecodable gossip packet: {0}")]
    Postcard(#[from] <PostcardCodec as Codec<GossipId>>::Error),
    #[error("incomplete member: {0}")]
    Incomplete(#[from] IdentityError),
}

/// Postcard (foca's own serde codec) plus Arlen's completeness rule for
/// senders and members.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WireCodec;

impl Codec<GossipId> for WireCodec {
    type Error = CodecError;

    fn encode_header(&mut self, header: &Header<GossipId>, buf: impl BufMut) -> Result<(), Self::Error> {
        Ok(PostcardCodec.encode_header(header, buf)?)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<GossipId>, Self::Error> {
        let header: Header<GossipId> = PostcardCodec.decode_header(buf)?;
        // The destination may be a seed's address-only identity; the sender never.
        header.src.check_complete()?;
        Ok(header)
    }

    fn encode_member(&mut self, member: &Member<GossipId>, buf: impl BufMut) -> Result<(), Self::Error> {
        Ok(PostcardCodec.encode_member(member, buf)?)
    }

    fn decode_member(&mut self, buf: impl Buf) -> Result<Member<GossipId>, Self::Error> {
        let member: Member<GossipId> = PostcardCodec.decode_member(buf)?;
        member.id().check_complete()?;
        Ok(member)
    }
}

/// A decoded packet: its header and the member updates it carries.
pub(crate) struct Packet {
    pub header: Header<GossipId>,
    pub members: Vec<Member<GossipId>>,
}

impl Packet {
    /// The sender and every member the packet names.
    pub(crate) fn identities(&self) -> impl Iterator<Item = &GossipId> {
        std::iter::once(&self.header.src).chain(self.members.iter().map(Member::id))
    }
}

/// The header and every member update of a packet (for the member bound,
/// "last heard", generations and evidence). Decodes the same way foca will.
pub(crate) fn decode_packet(mut packet: &[u8]) -> Result<Packet, CodecError> {
    let header = WireCodec.decode_header(&mut packet)?;
    let mut members = Vec::new();
    if packet.remaining() >= 2 && header.message != foca::Message::Broadcast {
        let count = packet.get_u16();
        for _ in 0..count {
            members.push(WireCodec.decode_member(&mut packet)?);
        }
    }
    Ok(Packet { header, members })
}

/// The sender and every member a packet names.
#[cfg(feature = "forge")]
pub(crate) fn identities_in(packet: &[u8]) -> Result<(GossipId, Vec<GossipId>), CodecError> {
    let packet = decode_packet(packet)?;
    let named = packet.members.iter().map(|m| m.id().clone()).collect();
    Ok((packet.header.src, named))
}

/// Encodes a packet as foca would (header, then the member count and members).
pub(crate) fn encode_packet(header: &Header<GossipId>, members: &[Member<GossipId>]) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::new();
    WireCodec.encode_header(header, &mut buf)?;
    buf.put_u16(u16::try_from(members.len()).unwrap_or(u16::MAX));
    for member in members.iter().take(usize::from(u16::MAX)) {
        WireCodec.encode_member(member, &mut buf)?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity as _;

    /// The identity and packet encoding of protocol version 1, byte for
    /// byte: version-1 nodes read nothing else, so a change here must be a
    /// new version (negotiated in the envelope, see `seal.rs`).
    #[test]
    fn version_1_packets_are_pinned() {
        let header = Header {
            src: id("node-1", 1_700_000_000_000, 2),
            src_incarnation: 3,
            dst: GossipId { state: Announced::Draining, ..id("node-2", 1_700_000_000_001, 0) },
            message: foca::Message::Ping(7),
        };
        let packet = encode_packet(&header, &[Member::new(id("node-3", 5, 1), 4, foca::State::Suspect)]).unwrap();
        let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "066e6f64652d3180d095ffbc3102007f000001d83615687474703a2f2f3132372e302e302e313a383030300003066e6f64652d3281d095ffbc3100007f000001d83615687474703a2f2f3132372e302e302e313a383030300100070001066e6f64652d330501007f000001d83615687474703a2f2f3132372e302e302e313a38303030000401"
        );
        let decoded = decode_packet(&packet).unwrap();
        assert_eq!(decoded.header, header);
    }

    fn id(node: &str, generation: u64, seq: u32) -> GossipId {
        GossipId {
            node_id: node.to_owned(),
            generation,
            seq,
            addr: "127.0.0.1:7000".parse().unwrap(),
            http_url: "http://127.0.0.1:8000".to_owned(),
            state: Announced::Alive,
        }
    }

    #[test]
    fn later_starts_and_renewals_win_the_address() {
        assert!(id("a", 2, 0).win_addr_conflict(&id("a", 1, 9)));
        assert!(id("a", 1, 1).win_addr_conflict(&id("a", 1, 0)));
        assert!(!id("a", 1, 0).win_addr_conflict(&id("a", 1, 1)));
        let renewed = id("a", 1, 0).renew().unwrap();
        assert_eq!((renewed.generation, renewed.seq), (1, 1));
        assert!(id("a", 1, u32::MAX).renew().is_none());
    }

    #[test]
    fn members_roundtrip_and_bounds_hold() {
        let member = Member::alive(id("node-1", 5, 2));
        let mut buf = Vec::new();
        WireCodec.encode_member(&member, &mut buf).unwrap();
        assert_eq!(WireCodec.decode_member(&buf[..]).unwrap(), member);

        let mut long = id(&"x".repeat(MAX_NODE_ID_BYTES + 1), 1, 0);
        let mut buf = Vec::new();
        WireCodec.encode_member(&Member::alive(long.clone()), &mut buf).unwrap();
        assert!(WireCodec.decode_member(&buf[..]).is_err(), "over-long node id refused");

        long.node_id = "evil\u{1b}[2J".to_owned();
        let mut buf = Vec::new();
        WireCodec.encode_member(&Member::alive(long), &mut buf).unwrap();
        assert!(WireCodec.decode_member(&buf[..]).is_err(), "control characters refused");

        let mut buf = Vec::new();
        WireCodec.encode_member(&Member::alive(GossipId::seed("127.0.0.1:1".parse().unwrap())), &mut buf).unwrap();
        assert!(WireCodec.decode_member(&buf[..]).is_err(), "a member without metadata is refused");
    }
}
