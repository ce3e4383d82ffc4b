//! etcd member records as the etcd source reads them: any key, value and
//! lease is counted only when it is leased, names the node of its key and
//! says a known state; none panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "/arlen/alpha/members/";

fuzz_target!(|data: &[u8]| {
    let fields = arlen_fuzz::fields(data);
    let [key_suffix, value, lease @ ..] = fields.as_slice() else { return };
    let mut key = PREFIX.as_bytes().to_vec();
    key.extend_from_slice(key_suffix);
    let lease = lease.first().map_or(0, |b| i64::from(b.first().copied().unwrap_or(0)));
    if let Some(node_id) = arlen_membership::fuzzing::etcd_record(PREFIX, &key, value, lease) {
        assert!(lease != 0, "a leaseless record was counted");
        assert_eq!(node_id.as_bytes(), *key_suffix, "a record counted under another node's key");
    }
});
