//! Forged gossip datagrams, for the tests that attack real nodes over UDP
//! (and for fuzzing the opener). Only built with the `forge` feature; no
//! production code path uses it.
//!
//! The packets are laid out exactly as foca lays out its own (header, then a
//! `u16` count and that many member updates) and encoded with the same codec,
//! so a node without keys accepts them — which is what makes a test that
//! shows a node *with* keys refusing them meaningful.

use std::net::SocketAddr;

use bytes::BufMut as _;
use foca::{Codec as _, Header, Member, Message, State};

use crate::gossip::identity::{Announced, GossipId, WireCodec};
use crate::gossip::seal::{Sealing, UnsealedTraffic};

/// A member as a forger claims it.
#[derive(Debug, Clone)]
pub struct ForgedMember {
    pub node_id: String,
    pub generation: u64,
    pub seq: u32,
    pub addr: SocketAddr,
    pub http_url: String,
    /// `alive`, `draining` or `left`.
    pub state: &'static str,
}

/// What a forged update says about a member.
#[derive(Debug, Clone, Copy)]
pub enum Claim {
    Alive,
    Suspect,
    Down,
}

/// How the forged packet is wrapped.
#[derive(Debug, Clone, Copy)]
pub enum Wrapping<'a> {
    /// Unsealed framing (what a node without keys sends).
    Unsealed,
    /// Sealed with this key (the right one, or a wrong one).
    SealedWith(&'a [u8; 32]),
}

impl ForgedMember {
    fn id(&self) -> GossipId {
        GossipId {
            node_id: self.node_id.clone(),
            generation: self.generation,
            seq: self.seq,
            addr: self.addr,
            http_url: self.http_url.clone(),
            state: match self.state {
                "draining" => Announced::Draining,
                "left" => Announced::Left,
                _ => Announced::Alive,
            },
            meta: crate::gossip::identity::Meta::default(),
        }
    }
}

fn wrap(cluster: &str, wrapping: Wrapping<'_>, packet: &[u8]) -> Vec<u8> {
    let sealing = match wrapping {
        Wrapping::Unsealed => Sealing::new(cluster, &[], UnsealedTraffic::Refuse),
        Wrapping::SealedWith(key) => Sealing::new(cluster, &[*key], UnsealedTraffic::Refuse),
    };
    sealing.seal(packet, crate::gossip::epoch_ms_now())
}

fn packet(header: &Header<GossipId>, updates: &[(ForgedMember, Claim)]) -> Vec<u8> {
    let mut buf = Vec::new();
    WireCodec.encode_header(header, &mut buf).expect("forged header encodes");
    if !updates.is_empty() {
        buf.put_u16(u16::try_from(updates.len()).unwrap_or(u16::MAX));
        for (member, claim) in updates {
            let state = match claim {
                Claim::Alive => State::Alive,
                Claim::Suspect => State::Suspect,
                Claim::Down => State::Down,
            };
            WireCodec.encode_member(&Member::new(member.id(), 0, state), &mut buf).expect("forged member encodes");
        }
    }
    buf
}

/// An `Announce` from `from` to whoever listens at `to`: a node that accepts
/// it counts `from` as a live member.
pub fn announce(cluster: &str, wrapping: Wrapping<'_>, from: &ForgedMember, to: SocketAddr) -> Vec<u8> {
    let header = Header { src: from.id(), src_incarnation: 0, dst: GossipId::seed(to), message: Message::Announce };
    wrap(cluster, wrapping, &packet(&header, &[]))
}

/// A `Gossip` message from `from` to the member `to`, carrying `updates`
/// (for example: another member is down).
pub fn gossip(
    cluster: &str,
    wrapping: Wrapping<'_>,
    from: &ForgedMember,
    to: &ForgedMember,
    updates: &[(ForgedMember, Claim)],
) -> Vec<u8> {
    let header = Header { src: from.id(), src_incarnation: 0, dst: to.id(), message: Message::Gossip };
    wrap(cluster, wrapping, &packet(&header, updates))
}

/// Opens a datagram as a node with `keys` would (accepting unsealed ones
/// when it has none): for fuzzing the opener and the decoder behind it.
pub fn open_and_decode(cluster: &str, keys: &[[u8; 32]], datagram: &[u8]) -> Result<usize, String> {
    let sealing = Sealing::new(cluster, keys, UnsealedTraffic::Refuse);
    let opened = sealing.open(datagram, crate::gossip::epoch_ms_now()).map_err(|r| r.label().to_owned())?;
    let (_, members) = crate::gossip::identity::identities_in(&opened.packet).map_err(|e| e.to_string())?;
    Ok(members.len())
}
