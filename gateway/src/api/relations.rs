//! Friends, follows and blocks.

use courier_protocol::ErrorCode;
use courier_storage::{Relation, RelationRefusal, RelationSet};

use crate::api::dto::{FriendRequests, RelationList, RelationView};
use crate::api::limits::Limit;
use crate::api::Api;
use crate::error::ApiError;

/// Largest page of a relation list.
pub const MAX_RELATION_PAGE: usize = 500;

impl From<RelationRefusal> for ApiError {
    fn from(r: RelationRefusal) -> Self {
        match r {
            RelationRefusal::SelfRelation => ApiError::invalid("that is yourself"),
            RelationRefusal::Blocked => ApiError::new(ErrorCode::Blocked, "this user blocks you"),
            RelationRefusal::Blocking => ApiError::invalid("you block this user; unblock first"),
            RelationRefusal::AlreadyFriends => {
                ApiError::new(ErrorCode::AlreadyExists, "already friends")
            }
            RelationRefusal::NoRequest => {
                ApiError::new(ErrorCode::NotFound, "no such pending request")
            }
            RelationRefusal::NotFriends => ApiError::new(ErrorCode::NotFound, "not friends"),
        }
    }
}

pub use courier_storage::RelationChange;

impl Api {
    /// `user_id`'s name, empty when there is no such account (a deleted user in a
    /// list).
    pub(crate) async fn name_of(&self, user_id: u64) -> Result<String, ApiError> {
        Ok(self
            .store
            .account(user_id)
            .await?
            .map(|a| a.name)
            .unwrap_or_default())
    }

    /// Checks that `user_id` names an account.
    pub async fn require_user(&self, user_id: u64) -> Result<String, ApiError> {
        self.store
            .account(user_id)
            .await?
            .map(|a| a.name)
            .ok_or_else(|| {
                ApiError::new(ErrorCode::UnknownUser, format!("no user with id {user_id}"))
            })
    }

    /// Applies `change` between `user` and `peer` (durably) and returns the new
    /// relation.
    pub async fn change_relation(
        &self,
        user: u64,
        peer: u64,
        change: RelationChange,
    ) -> Result<RelationView, ApiError> {
        self.require_user(peer).await?;
        if matches!(
            change,
            RelationChange::Request | RelationChange::Follow(true)
        ) {
            self.limits.user(Limit::FriendRequest, user)?;
        }
        self.store.change_relation(user, peer, change).await??;
        self.relation_view(user, peer).await
    }

    /// How `user` relates to `peer`.
    pub async fn relation_view(&self, user: u64, peer: u64) -> Result<RelationView, ApiError> {
        let name = self.require_user(peer).await?;
        Ok(view(peer, name, self.store.relation(user, peer).await?))
    }

    /// A page of `user`'s relations in `set`.
    pub async fn relation_list(
        &self,
        user: u64,
        after: u64,
        limit: usize,
        set: RelationSet,
    ) -> Result<RelationList, ApiError> {
        let limit = limit.clamp(1, MAX_RELATION_PAGE);
        let page = self.store.relations(user, after, limit, set).await?;
        let next_after = (page.len() == limit)
            .then(|| page.last().map(|(p, _)| *p))
            .flatten();
        let mut users = Vec::with_capacity(page.len());
        for (peer, r) in page {
            let name = self.name_of(peer).await?;
            users.push(view(peer, name, r));
        }
        Ok(RelationList { users, next_after })
    }

    /// Pending requests to and from `user`.
    pub async fn friend_requests(&self, user: u64) -> Result<FriendRequests, ApiError> {
        Ok(FriendRequests {
            incoming: self
                .relation_list(user, 0, MAX_RELATION_PAGE, RelationSet::RequestsReceived)
                .await?
                .users,
            outgoing: self
                .relation_list(user, 0, MAX_RELATION_PAGE, RelationSet::RequestsSent)
                .await?
                .users,
        })
    }
}

fn view(peer: u64, name: String, r: Relation) -> RelationView {
    RelationView {
        user_id: peer,
        name,
        friend: r.friend,
        request_sent: r.request_sent,
        request_received: r.request_received,
        following: r.following,
        followed_by: r.followed_by,
        blocking: r.blocking,
        since_ms: r.since_ms,
    }
}
