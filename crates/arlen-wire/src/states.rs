//! The words for a member's state and the cluster's status, as the
//! documents and headers carry them (`alive`, `degraded`, ...): typed, so
//! that tools compare values rather than strings.

/// An enum of wire words: the type, `ALL` (every value, in order), `as_str`,
/// `Display`, and `FromStr` whose error names the words it takes.
macro_rules! wire_words {
    ($(#[$meta:meta])* $name:ident ($what:literal) { $($(#[$vmeta:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|value| value.as_str() == s).ok_or_else(|| {
                    let words: Vec<&str> = $name::ALL.iter().map(|value| value.as_str()).collect();
                    format!("unknown {} {s:?} (expected one of {})", $what, words.join(", "))
                })
            }
        }
    };
}

pub(crate) use wire_words;

wire_words!(
    /// The cluster's status as this node sees it.
    QuorumStatus ("status") {
        SingleNode => "single_node",
        Partitioned => "partitioned",
        Degraded => "degraded",
        Nominal => "nominal",
    }
);

wire_words!(
    /// A member's state as its membership source sees it.
    MemberState ("member state") {
        Alive => "alive",
        Suspect => "suspect",
        /// Announced that it is shutting down; still answering, not counted.
        Draining => "draining",
        Dead => "dead",
        Left => "left",
    }
);

wire_words!(
    /// How a member answers this node's probes (gray failures named):
    /// `one_way` — its direct probes keep failing while others reach it
    /// (one direction, or this pair's path, is cut); `slow` — its round trip
    /// is far above the others'; `lossy` — a share of its direct probes needs
    /// a second try or fails; `ok` otherwise.
    Reachability ("reachability") {
        Ok => "ok",
        OneWay => "one_way",
        Lossy => "lossy",
        Slow => "slow",
    }
);

impl MemberState {
    /// Counted towards quorum, or on its way out but still answering.
    pub fn is_up(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Draining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serde's word is the wire word, and every word reads back as its value.
    #[test]
    fn words_round_trip() {
        for status in QuorumStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(status.as_str().parse::<QuorumStatus>(), Ok(*status));
        }
        for state in MemberState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
            assert_eq!(state.as_str().parse::<MemberState>(), Ok(*state));
        }
        for class in Reachability::ALL {
            assert_eq!(serde_json::to_value(class).unwrap(), class.as_str());
        }
        assert!("green".parse::<QuorumStatus>().unwrap_err().contains("expected one of single_node"));
    }
}
