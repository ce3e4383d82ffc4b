//! Where nodes and tools meet: the documents a node serves (`/clusterz`, the
//! probes' JSON) and the names of the headers it sets, as one typed
//! vocabulary. The endpoints render these types; `arlen triage`, `arlen up`,
//! the drills, the test kit and the tests read them back. Serde only — no
//! HTTP stack — so a tool that reads a node's state does not pull in a server.

#![forbid(unsafe_code)]

pub mod documents;
pub mod events;
pub mod faults;
pub mod headers;
pub mod states;
