//! The rules of relations between two users (friend requests, friendships, follows,
//! blocks), the same whatever backend stores them: a change made by one user is
//! applied to both sides of the pair (each side is that user's view), or refused.
//! Backends store the two views and apply changes through [`RelationChange::apply`]
//! under their own pair lock or transaction.

/// How a user relates to a peer, from the user's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Relation {
    /// Mutual friends.
    pub friend: bool,
    /// The user asked the peer to be friends; pending.
    pub request_sent: bool,
    /// The peer asked the user to be friends; pending.
    pub request_received: bool,
    /// The user follows the peer (one-way).
    pub following: bool,
    /// The peer follows the user.
    pub followed_by: bool,
    /// The user blocks the peer.
    pub blocking: bool,
    /// The peer blocks the user.
    pub blocked_by: bool,
    /// When this side last changed (ms since the Unix epoch).
    pub since_ms: u64,
}

/// A set of a user's relations, as lists and fan-outs ask for them: the one place
/// that says which relations belong to which list, for every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationSet {
    /// Mutual friends.
    Friends,
    /// Peers whose friend request waits for the user.
    RequestsReceived,
    /// Peers the user asked to be friends.
    RequestsSent,
    /// Peers the user follows.
    Following,
    /// Peers who follow the user.
    Followers,
    /// Peers the user blocks.
    Blocking,
    /// Who is told when the user comes online or goes offline: friends (and
    /// followers, when `followers`), never anyone either side blocks.
    PresenceAudience {
        /// Followers are told too.
        followers: bool,
    },
}

impl RelationSet {
    /// Whether a peer the user relates to by `r` is in this set.
    pub fn contains(self, r: &Relation) -> bool {
        match self {
            RelationSet::Friends => r.friend,
            RelationSet::RequestsReceived => r.request_received,
            RelationSet::RequestsSent => r.request_sent,
            RelationSet::Following => r.following,
            RelationSet::Followers => r.followed_by,
            RelationSet::Blocking => r.blocking,
            RelationSet::PresenceAudience { followers } => {
                (r.friend || (followers && r.followed_by)) && !r.blocking && !r.blocked_by
            }
        }
    }
}

/// What the caller of a friend request ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// The request waits for the peer.
    Pending,
    /// The peer had asked too: both are friends now.
    Friends,
}

/// Why a relation change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationRefusal {
    /// A user cannot relate to itself.
    SelfRelation,
    /// The peer blocks the user.
    Blocked,
    /// The user blocks the peer (unblock first).
    Blocking,
    /// They are friends already.
    AlreadyFriends,
    /// There is no pending request to act on.
    NoRequest,
    /// They are not friends.
    NotFriends,
}

/// A change one user makes to its relation with a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationChange {
    /// Ask to be friends (friends at once if the peer had asked too).
    Request,
    /// Accept the peer's pending request.
    Accept,
    /// Decline the peer's pending request.
    Decline,
    /// Withdraw one's own pending request.
    Cancel,
    /// End a friendship (both sides).
    Unfriend,
    /// Follow or unfollow (one-way; needs no consent).
    Follow(bool),
    /// Block or unblock. Blocking drops pending requests and the peer's follow; a
    /// friendship stays, but a blocked peer cannot message the user or see its
    /// presence.
    Block(bool),
}

impl RelationChange {
    /// Applies the change to `mine` (the acting user's view) and `theirs` (the
    /// peer's), or refuses it leaving both as they were. A friend request answers
    /// whether it is pending or made them friends.
    pub fn apply(
        self,
        mine: &mut Relation,
        theirs: &mut Relation,
    ) -> Result<Option<RequestOutcome>, RelationRefusal> {
        match self {
            RelationChange::Request => {
                if mine.blocked_by {
                    return Err(RelationRefusal::Blocked);
                }
                if mine.blocking {
                    return Err(RelationRefusal::Blocking);
                }
                if mine.friend {
                    return Err(RelationRefusal::AlreadyFriends);
                }
                if mine.request_received {
                    make_friends(mine, theirs);
                    return Ok(Some(RequestOutcome::Friends));
                }
                mine.request_sent = true;
                theirs.request_received = true;
                return Ok(Some(RequestOutcome::Pending));
            }
            RelationChange::Accept => {
                if !mine.request_received {
                    return Err(RelationRefusal::NoRequest);
                }
                make_friends(mine, theirs);
            }
            RelationChange::Decline => {
                if !mine.request_received {
                    return Err(RelationRefusal::NoRequest);
                }
                mine.request_received = false;
                theirs.request_sent = false;
            }
            RelationChange::Cancel => {
                if !mine.request_sent {
                    return Err(RelationRefusal::NoRequest);
                }
                mine.request_sent = false;
                theirs.request_received = false;
            }
            RelationChange::Unfriend => {
                if !mine.friend {
                    return Err(RelationRefusal::NotFriends);
                }
                mine.friend = false;
                theirs.friend = false;
            }
            RelationChange::Follow(follow) => {
                if follow && mine.blocked_by {
                    return Err(RelationRefusal::Blocked);
                }
                mine.following = follow;
                theirs.followed_by = follow;
            }
            RelationChange::Block(block) => {
                mine.blocking = block;
                theirs.blocked_by = block;
                if block {
                    mine.request_sent = false;
                    mine.request_received = false;
                    theirs.request_sent = false;
                    theirs.request_received = false;
                    mine.followed_by = false;
                    theirs.following = false;
                }
            }
        }
        Ok(None)
    }
}

impl Relation {
    /// Nothing left between the two: the backend may drop the record.
    pub fn is_empty(&self) -> bool {
        !(self.friend
            || self.request_sent
            || self.request_received
            || self.following
            || self.followed_by
            || self.blocking
            || self.blocked_by)
    }
}

/// The administrative import of a friendship (not a user action): both sides
/// become friends unless either blocks the other; whether they are friends now.
pub fn befriend(mine: &mut Relation, theirs: &mut Relation) -> bool {
    if mine.blocking || mine.blocked_by {
        return false;
    }
    make_friends(mine, theirs);
    true
}

/// Both sides become friends; pending requests are settled.
pub(crate) fn make_friends(mine: &mut Relation, theirs: &mut Relation) {
    mine.friend = true;
    theirs.friend = true;
    mine.request_sent = false;
    mine.request_received = false;
    theirs.request_sent = false;
    theirs.request_received = false;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change seen from the other side is the mirror image: what one side says of
    /// the pair, the other says the other way round.
    fn mirrored(a: &Relation, b: &Relation) -> bool {
        a.friend == b.friend
            && a.request_sent == b.request_received
            && a.request_received == b.request_sent
            && a.following == b.followed_by
            && a.followed_by == b.following
            && a.blocking == b.blocked_by
            && a.blocked_by == b.blocking
    }

    proptest::proptest! {
        /// Any sequence of changes by either user keeps the two views mirrored, and
        /// a refused change changes nothing.
        #[test]
        fn both_views_stay_mirror_images(steps in proptest::collection::vec((proptest::bool::ANY, 0..9u8), 0..40)) {
            let (mut a, mut b) = (Relation::default(), Relation::default());
            for (by_a, which) in steps {
                let change = match which {
                    0 => RelationChange::Request,
                    1 => RelationChange::Accept,
                    2 => RelationChange::Decline,
                    3 => RelationChange::Cancel,
                    4 => RelationChange::Unfriend,
                    5 => RelationChange::Follow(true),
                    6 => RelationChange::Follow(false),
                    7 => RelationChange::Block(true),
                    _ => RelationChange::Block(false),
                };
                let (mine, theirs) = if by_a { (&mut a, &mut b) } else { (&mut b, &mut a) };
                let before = (*mine, *theirs);
                if change.apply(mine, theirs).is_err() {
                    proptest::prop_assert_eq!((*mine, *theirs), before);
                }
                proptest::prop_assert!(mirrored(&a, &b), "{:?} / {:?}", a, b);
                proptest::prop_assert!(!(a.friend && (a.request_sent || a.request_received)));
            }
        }
    }

    #[test]
    fn crossing_requests_make_friends() {
        let (mut a, mut b) = (Relation::default(), Relation::default());
        assert_eq!(
            RelationChange::Request.apply(&mut a, &mut b),
            Ok(Some(RequestOutcome::Pending))
        );
        assert_eq!(
            RelationChange::Request.apply(&mut b, &mut a),
            Ok(Some(RequestOutcome::Friends))
        );
        assert!(a.friend && b.friend);
        assert_eq!(
            RelationChange::Request.apply(&mut a, &mut b),
            Err(RelationRefusal::AlreadyFriends)
        );
        RelationChange::Block(true).apply(&mut b, &mut a).unwrap();
        assert_eq!(
            RelationChange::Follow(true).apply(&mut a, &mut b),
            Err(RelationRefusal::Blocked)
        );
    }

    #[test]
    fn a_block_either_way_hides_presence_even_from_friends() {
        let friend = Relation {
            friend: true,
            ..Relation::default()
        };
        let follower = Relation {
            followed_by: true,
            ..Relation::default()
        };
        let blocked_friend = Relation {
            blocked_by: true,
            ..friend
        };
        let audience = |followers| RelationSet::PresenceAudience { followers };
        assert!(audience(false).contains(&friend));
        assert!(!audience(false).contains(&follower));
        assert!(audience(true).contains(&follower));
        assert!(!audience(true).contains(&blocked_friend));
        assert!(!audience(true).contains(&Relation {
            blocking: true,
            ..follower
        }));
        assert!(RelationSet::Friends.contains(&blocked_friend));
        assert!(RelationSet::Followers.contains(&follower));
        assert!(!RelationSet::Following.contains(&follower));
    }
}
