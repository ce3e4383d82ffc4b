//! Gossip datagrams through the real receive path: the opener (framing,
//! sealing, replay window, size bounds), the identity codec and foca. Half
//! the inputs are sealed with the cluster key first, so the decoders behind
//! the opener see attacker-chosen plaintext too (a hostile key holder), in
//! layout 3 or, as a peer of protocol version 2 sends it, in layout 1 (the
//! transcoder's input). No input panics, and the member bound holds.
#![no_main]

use std::net::SocketAddr;

use arlen_membership::fuzzing::GossipReceiver;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut receiver = GossipReceiver::new(mode & 2 != 0);
    for (i, datagram) in arlen_fuzz::fields(rest).into_iter().enumerate() {
        let from = SocketAddr::from(([127, 0, 0, 2], 7000 + u16::try_from(i % 64).unwrap_or(0)));
        if mode & 1 == 0 {
            receiver.receive(from, datagram);
        } else {
            let sealed = if mode & 4 == 0 { receiver.seal(datagram) } else { receiver.seal_layout_1(datagram) };
            receiver.receive(from, &sealed);
        }
    }
    let members = receiver.members();
    assert!(members.len() < receiver.max_members(), "{} members beyond the bound", members.len());
    assert!(members.iter().all(|(id, _)| !id.is_empty()), "a member without a node id");
});
