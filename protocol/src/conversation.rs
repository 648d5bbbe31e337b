//! Conversation ids.
//!
//! A 1:1 conversation is identified by its ordered user pair, so both participants
//! derive the same id without asking the server: `d:<low>:<high>`. A group
//! conversation is `g:<group id>`. The textual form is what travels in frames and URLs.

use std::fmt;
use std::str::FromStr;

/// The canonical id of one conversation log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConversationId {
    /// A one-to-one conversation between two distinct users, `low < high`.
    Direct {
        /// The smaller user id.
        low: u64,
        /// The larger user id.
        high: u64,
    },
    /// A group conversation.
    Group(u64),
}

/// Why a string is not a conversation id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid conversation id {0:?}: expected \"d:<user>:<user>\" or \"g:<group>\"")]
pub struct ParseConversationError(pub String);

impl ConversationId {
    /// The 1:1 conversation between `a` and `b`, or `None` when they are the same user.
    pub fn direct(a: u64, b: u64) -> Option<Self> {
        match a.cmp(&b) {
            std::cmp::Ordering::Less => Some(Self::Direct { low: a, high: b }),
            std::cmp::Ordering::Greater => Some(Self::Direct { low: b, high: a }),
            std::cmp::Ordering::Equal => None,
        }
    }

    /// The other participant of a 1:1 conversation, if `user` is one of the two.
    pub fn peer_of(&self, user: u64) -> Option<u64> {
        match *self {
            Self::Direct { low, high } if low == user => Some(high),
            Self::Direct { low, high } if high == user => Some(low),
            _ => None,
        }
    }

    /// Whether this is a group conversation.
    pub fn is_group(&self) -> bool {
        matches!(self, Self::Group(_))
    }

    /// A stable 64-bit value for choosing the shard that owns this log.
    pub fn shard_hash(&self) -> u64 {
        match *self {
            Self::Direct { low, high } => mix(low ^ mix(high)),
            Self::Group(id) => mix(id ^ 0x9e37_79b9_7f4a_7c15),
        }
    }
}

/// SplitMix64 finaliser: spreads sequential ids evenly over shards.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Direct { low, high } => write!(f, "d:{low}:{high}"),
            Self::Group(id) => write!(f, "g:{id}"),
        }
    }
}

impl FromStr for ConversationId {
    type Err = ParseConversationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseConversationError(s.chars().take(64).collect());
        let parse = |part: &str| -> Result<u64, ParseConversationError> {
            // Canonical decimal only: no sign, no leading zeros, so one id has one spelling.
            if part.is_empty() || (part.len() > 1 && part.starts_with('0')) || part.starts_with('+')
            {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        if let Some(rest) = s.strip_prefix("d:") {
            let (a, b) = rest.split_once(':').ok_or_else(bad)?;
            let (low, high) = (parse(a)?, parse(b)?);
            if low >= high {
                return Err(bad());
            }
            Ok(Self::Direct { low, high })
        } else if let Some(rest) = s.strip_prefix("g:") {
            Ok(Self::Group(parse(rest)?))
        } else {
            Err(bad())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn direct_is_ordered() {
        assert_eq!(ConversationId::direct(9, 3), ConversationId::direct(3, 9));
        assert_eq!(ConversationId::direct(4, 4), None);
        let c = ConversationId::direct(9, 3).unwrap();
        assert_eq!(c.to_string(), "d:3:9");
        assert_eq!(c.peer_of(3), Some(9));
        assert_eq!(c.peer_of(9), Some(3));
        assert_eq!(c.peer_of(5), None);
    }

    #[test]
    fn rejects_non_canonical_forms() {
        for s in [
            "", "d:", "d:1", "d:2:1", "d:1:1", "d:01:2", "d:+1:2", "g:", "g:-1", "x:1", "d:1:2:3",
            "g:1 ",
        ] {
            assert!(s.parse::<ConversationId>().is_err(), "{s:?} parsed");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(a in any::<u64>(), b in any::<u64>(), g in any::<u64>()) {
            if let Some(c) = ConversationId::direct(a, b) {
                prop_assert_eq!(c.to_string().parse::<ConversationId>().unwrap(), c);
            }
            let group = ConversationId::Group(g);
            prop_assert_eq!(group.to_string().parse::<ConversationId>().unwrap(), group);
        }
    }
}
