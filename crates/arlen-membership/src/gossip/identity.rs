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
//! **Layouts.** Foca sees one identity type, encoded in layout 3: the six
//! fields of version 1, then what a member says about itself beyond who it is
//! ([`Meta`]: its software version and zone). A peer that speaks only
//! version 1 or 2 reads and writes layout 1 (the six fields); the core
//! transcodes at the boundary ([`to_legacy`], [`from_legacy`]), so foca and
//! everything that reads a packet only ever see layout 3. An identity's
//! equality and hash ignore its [`Meta`]: one member relayed by an old node
//! (without it) and heard directly (with it) is one member, not two.
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
/// Longest software version a member may gossip, in bytes.
pub(crate) const MAX_SOFTWARE_BYTES: usize = 64;
/// Longest zone a member may gossip, in bytes (`cluster.zone` has the same bound).
pub(crate) const MAX_ZONE_BYTES: usize = arlen_config::MAX_ZONE_BYTES;

/// What a node says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Announced {
    Alive,
    Draining,
    Left,
}

/// What a member says about itself beyond who it is (layout 3). Fixed for a
/// process's life, so it never needs a renewal to change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// Its software version (`version+git-sha`).
    pub software: Option<String>,
    /// Its `cluster.zone`.
    pub zone: Option<String>,
}

/// A member's identity on the wire (layout 3).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Not part of who the member is: ignored by equality and hash.
    pub meta: Meta,
}

impl PartialEq for GossipId {
    fn eq(&self, other: &Self) -> bool {
        self.who() == other.who()
    }
}

impl Eq for GossipId {}

impl std::hash::Hash for GossipId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.who().hash(state);
    }
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
    meta: Meta,
}

/// An identity in layout 1 (protocol versions 1 and 2): the six fields.
#[derive(Clone, Serialize, Deserialize)]
struct LegacyId {
    node_id: String,
    generation: u64,
    seq: u32,
    addr: SocketAddr,
    http_url: String,
    state: Announced,
}

impl From<GossipId> for LegacyId {
    fn from(id: GossipId) -> Self {
        let GossipId { node_id, generation, seq, addr, http_url, state, meta: _ } = id;
        Self { node_id, generation, seq, addr, http_url, state }
    }
}

impl TryFrom<LegacyId> for GossipId {
    type Error = IdentityError;

    fn try_from(id: LegacyId) -> Result<Self, Self::Error> {
        let LegacyId { node_id, generation, seq, addr, http_url, state } = id;
        GossipId::try_from(WireId { node_id, generation, seq, addr, http_url, state, meta: Meta::default() })
    }
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
    #[error("a member's software version or zone is too long")]
    MetaTooLong,
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
        let software = wire.meta.software.as_deref().unwrap_or_default();
        let zone = wire.meta.zone.as_deref().unwrap_or_default();
        if software.len() > MAX_SOFTWARE_BYTES || zone.len() > MAX_ZONE_BYTES {
            return Err(IdentityError::MetaTooLong);
        }
        let texts = [&wire.node_id, &wire.http_url].into_iter().map(String::as_str).chain([software, zone]);
        if texts.flat_map(str::chars).any(char::is_control) {
            return Err(IdentityError::ControlCharacters);
        }
        Ok(Self {
            node_id: wire.node_id,
            generation: wire.generation,
            seq: wire.seq,
            addr: wire.addr,
            http_url: wire.http_url,
            state: wire.state,
            meta: wire.meta,
        })
    }
}

impl GossipId {
    /// The address-only identity used to announce to a seed whose identity is
    /// not known yet (foca accepts an `Announce` addressed to any identity at
    /// its address).
    pub(crate) fn seed(addr: SocketAddr) -> Self {
        Self {
            node_id: String::new(),
            generation: 0,
            seq: 0,
            addr,
            http_url: String::new(),
            state: Announced::Alive,
            meta: Meta::default(),
        }
    }

    /// This identity as it travels when it is not its sender's own: without
    /// the software version. A member's zone goes everywhere (quorum over
    /// zones counts it, so every node must know every member's), its
    /// software only in the datagrams it sends itself (and the version-2
    /// envelope): nobody needs it relayed, so no relayed update pays for it.
    pub(crate) fn relayed(&self) -> Self {
        Self { meta: Meta { software: None, zone: self.meta.zone.clone() }, ..self.clone() }
    }

    /// Who the member is: everything but its [`Meta`].
    fn who(&self) -> (&str, u64, u32, SocketAddr, &str, Announced) {
        (&self.node_id, self.generation, self.seq, self.addr, &self.http_url, self.state)
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

    /// The sender's identity goes whole; every other identity without its
    /// software version (see [`GossipId::relayed`]).
    fn encode_header(&mut self, header: &Header<GossipId>, buf: impl BufMut) -> Result<(), Self::Error> {
        let relayed = map_header(header.clone(), |id| Ok(id.relayed()))?;
        Ok(PostcardCodec.encode_header(&Header { src: header.src.clone(), ..relayed }, buf)?)
    }

    fn decode_header(&mut self, buf: impl Buf) -> Result<Header<GossipId>, Self::Error> {
        let header: Header<GossipId> = PostcardCodec.decode_header(buf)?;
        // The destination may be a seed's address-only identity; the sender never.
        header.src.check_complete()?;
        Ok(header)
    }

    fn encode_member(&mut self, member: &Member<GossipId>, buf: impl BufMut) -> Result<(), Self::Error> {
        if member.id().meta.software.is_none() {
            return Ok(PostcardCodec.encode_member(member, buf)?);
        }
        let relayed = Member::new(member.id().relayed(), member.incarnation(), member.state());
        Ok(PostcardCodec.encode_member(&relayed, buf)?)
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

/// The same header with every identity mapped (layouts differ only there).
fn map_header<A, B>(header: Header<A>, mut f: impl FnMut(A) -> Result<B, CodecError>) -> Result<Header<B>, CodecError> {
    use foca::Message as M;
    let message = match header.message {
        M::Ping(n) => M::Ping(n),
        M::Ack(n) => M::Ack(n),
        M::PingReq { target, probe_number } => M::PingReq { target: f(target)?, probe_number },
        M::IndirectPing { origin, probe_number } => M::IndirectPing { origin: f(origin)?, probe_number },
        M::IndirectAck { target, probe_number } => M::IndirectAck { target: f(target)?, probe_number },
        M::ForwardedAck { origin, probe_number } => M::ForwardedAck { origin: f(origin)?, probe_number },
        M::Announce => M::Announce,
        M::Feed => M::Feed,
        M::Gossip => M::Gossip,
        M::Broadcast => M::Broadcast,
        M::TurnUndead => M::TurnUndead,
    };
    Ok(Header { src: f(header.src)?, src_incarnation: header.src_incarnation, dst: f(header.dst)?, message })
}

/// A packet of layout 3 in layout 1, for a peer that speaks only versions 1
/// and 2 (what each member says of itself beyond who it is is left out).
pub(crate) fn to_legacy(packet: &[u8]) -> Result<Vec<u8>, CodecError> {
    transcode(packet, WireCodec, PostcardCodec, |id| Ok(LegacyId::from(id)))
}

/// A packet of layout 1 (from a peer that speaks only versions 1 and 2) in
/// layout 3, each identity with an empty [`Meta`] and its fields bounded;
/// the core then decodes it as any packet (completeness checked there).
pub(crate) fn from_legacy(packet: &[u8]) -> Result<Vec<u8>, CodecError> {
    transcode(packet, PostcardCodec, WireCodec, |id: LegacyId| Ok(GossipId::try_from(id)?))
}

/// Reads a packet with `read`, maps every identity, writes it with `write`:
/// the header, then the member count and members (not for a broadcast), then
/// whatever follows, as it is.
fn transcode<A: Clone, B, R: Codec<A>, W: Codec<B>>(
    mut packet: &[u8],
    mut read: R,
    mut write: W,
    mut f: impl FnMut(A) -> Result<B, CodecError>,
) -> Result<Vec<u8>, CodecError>
where
    CodecError: From<R::Error> + From<W::Error>,
{
    let header = map_header(read.decode_header(&mut packet)?, &mut f)?;
    let mut out = Vec::with_capacity(packet.len() + 64);
    write.encode_header(&header, &mut out)?;
    if packet.remaining() >= 2 && !matches!(header.message, foca::Message::Broadcast) {
        let count = packet.get_u16();
        out.put_u16(count);
        for _ in 0..count {
            let member = read.decode_member(&mut packet)?;
            let (incarnation, state) = (member.incarnation(), member.state());
            write.encode_member(&Member::new(f(member.id().clone())?, incarnation, state), &mut out)?;
        }
    }
    out.extend_from_slice(packet);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity as _;

    /// The identity and packet encoding of protocol version 1 (layout 1),
    /// byte for byte: version-1 and -2 nodes read nothing else, so a change
    /// here must be a new version (negotiated in the envelope, see
    /// `seal.rs`). What a peer of those versions is sent is a layout-3
    /// packet transcoded, and what it sends is read back the same.
    #[test]
    fn version_1_packets_are_pinned() {
        let (header, members) = pinned_packet();
        let packet = to_legacy(&encode_packet(&header, &members).unwrap()).unwrap();
        let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "066e6f64652d3180d095ffbc3102007f000001d83615687474703a2f2f3132372e302e302e313a383030300003066e6f64652d3281d095ffbc3100007f000001d83615687474703a2f2f3132372e302e302e313a383030300100070001066e6f64652d330501007f000001d83615687474703a2f2f3132372e302e302e313a38303030000401"
        );
        let decoded = decode_packet(&from_legacy(&packet).unwrap()).unwrap();
        assert_eq!(decoded.header, header);
        assert!(decoded.identities().all(|id| id.meta == Meta::default()), "layout 1 says nothing of the members");
    }

    /// Layout 3 (protocol version 3): each identity's six fields, then its
    /// software version and zone (postcard options).
    #[test]
    fn version_3_packets_are_pinned() {
        let (header, members) = pinned_packet();
        let packet = encode_packet(&header, &members).unwrap();
        let hex: String = packet.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "066e6f64652d3180d095ffbc3102007f000001d83615687474703a2f2f3132372e302e302e313a38303030000105302e392e30010665752d312d6103066e6f64652d3281d095ffbc3100007f000001d83615687474703a2f2f3132372e302e302e313a3830303001000000070001066e6f64652d330501007f000001d83615687474703a2f2f3132372e302e302e313a38303030000001056575312d630401"
        );
        let decoded = decode_packet(&packet).unwrap();
        assert_eq!(decoded.header, header);
        let metas: Vec<&Meta> = decoded.identities().map(|id| &id.meta).collect();
        assert_eq!(metas, [&header.src.meta, &members[0].id().meta]);
    }

    fn pinned_packet() -> (Header<GossipId>, Vec<Member<GossipId>>) {
        let src = GossipId {
            meta: Meta { software: Some("0.9.0".to_owned()), zone: Some("eu-1-a".to_owned()) },
            ..id("node-1", 1_700_000_000_000, 2)
        };
        let header = Header {
            src,
            src_incarnation: 3,
            dst: GossipId { state: Announced::Draining, ..id("node-2", 1_700_000_000_001, 0) },
            message: foca::Message::Ping(7),
        };
        let third = GossipId { meta: Meta { software: None, zone: Some("eu1-c".to_owned()) }, ..id("node-3", 5, 1) };
        (header, vec![Member::new(third, 4, foca::State::Suspect)])
    }

    /// A member's software travels only in the datagrams it sends itself;
    /// its zone goes everywhere.
    #[test]
    fn software_is_not_relayed_and_zones_are() {
        let told = Meta { software: Some("1.0.0+abc".to_owned()), zone: Some("a".to_owned()) };
        let src = GossipId { meta: told.clone(), ..id("node-1", 1, 0) };
        let other = GossipId { meta: told.clone(), ..id("node-2", 1, 0) };
        let header = Header {
            src: src.clone(),
            src_incarnation: 0,
            dst: other.clone(),
            message: foca::Message::PingReq { target: other.clone(), probe_number: 1 },
        };
        let packet = decode_packet(&encode_packet(&header, &[Member::alive(other.clone())]).unwrap()).unwrap();
        assert_eq!(packet.header.src.meta, told, "the sender's own identity goes whole");
        let relayed = Meta { software: None, zone: Some("a".to_owned()) };
        let foca::Message::PingReq { target, .. } = &packet.header.message else { panic!("a ping-req") };
        assert_eq!([&packet.header.dst.meta, &target.meta, &packet.members[0].id().meta], [&relayed; 3]);
    }

    /// One member known from a layout-1 copy and from a layout-3 one is one
    /// member to foca (equality and hash ignore what it says of itself).
    #[test]
    fn what_a_member_says_of_itself_is_not_who_it_is() {
        let plain = id("node-1", 9, 0);
        let told =
            GossipId { meta: Meta { software: Some("1.0.0".to_owned()), zone: Some("a".to_owned()) }, ..plain.clone() };
        assert_eq!(plain, told);
        let set: std::collections::HashSet<GossipId> = [plain, told].into_iter().collect();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn over_long_or_control_metadata_is_refused() {
        for meta in [
            Meta { software: Some("v".repeat(MAX_SOFTWARE_BYTES + 1)), zone: None },
            Meta { software: None, zone: Some("z".repeat(MAX_ZONE_BYTES + 1)) },
            Meta { software: None, zone: Some("a\u{7}".to_owned()) },
        ] {
            // As a hostile sender would write it (ours never relays software).
            let mut buf = Vec::new();
            PostcardCodec.encode_member(&Member::alive(GossipId { meta, ..id("node-1", 5, 0) }), &mut buf).unwrap();
            assert!(WireCodec.decode_member(&buf[..]).is_err());
        }
    }

    fn id(node: &str, generation: u64, seq: u32) -> GossipId {
        GossipId {
            node_id: node.to_owned(),
            generation,
            seq,
            addr: "127.0.0.1:7000".parse().unwrap(),
            http_url: "http://127.0.0.1:8000".to_owned(),
            state: Announced::Alive,
            meta: Meta::default(),
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
