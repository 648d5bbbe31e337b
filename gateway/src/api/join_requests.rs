//! Join requests, for groups whose join policy is `approval`: anyone who can see the
//! group asks to join (with a short message), its owner and admins are told at once
//! on their online devices (a `JoinRequested` frame) and find every pending request
//! listed; one of them approves (the user joins, with a `MemberJoined` event naming
//! the approver) or declines it, or the user takes it back.
//!
//! A request is a note, not part of the group's log: the group only changes when
//! a request is approved, and that change goes through the store's group rules like
//! any addition, so a ban or a full group that came after the request still wins.

use courier_protocol::pb::{self, Frame};
use courier_protocol::{encode_frame, ErrorCode};
use courier_storage::{JoinPolicy, JoinRequest, Role};

use crate::api::dto::{GroupView, JoinRequestList, JoinRequestView, MemberView};
use crate::api::groups::MAX_MEMBER_PAGE;
use crate::api::limits::Limit;
use crate::api::Api;
use crate::connection::service::Fanout;
use crate::error::ApiError;

/// What asking to join a group did.
#[derive(Debug)]
pub enum Joined {
    /// The group is open: the user is a member now.
    Member(GroupView),
    /// The group approves its members: the request waits for the owner or an admin.
    Requested(JoinRequestView),
}

impl Api {
    /// Joins `group` when it is open; asks to join, with `message`, when it
    /// approves its members. An invite-only group is not found.
    pub async fn join_or_request(
        &self,
        group: u64,
        user: u64,
        message: String,
    ) -> Result<Joined, ApiError> {
        let info = self
            .store
            .group(group)
            .await?
            .filter(|g| !g.dismissed)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such group"))?;
        match info.join_policy {
            JoinPolicy::Open => Ok(Joined::Member(self.join_group(group, user).await?)),
            JoinPolicy::InviteOnly => Err(ApiError::new(ErrorCode::NotFound, "no such group")),
            JoinPolicy::Approval => Ok(Joined::Requested(
                self.request_to_join(group, user, message).await?,
            )),
        }
    }

    /// Records `user`'s request to join `group` and tells its owner and admins.
    async fn request_to_join(
        &self,
        group: u64,
        user: u64,
        message: String,
    ) -> Result<JoinRequestView, ApiError> {
        crate::api::hygiene::check_chars("message", &message)?;
        courier_storage::validate_join_request(&message)?;
        if self.store.member(group, user).await?.is_some() {
            return Err(ApiError::new(ErrorCode::AlreadyExists, "already a member"));
        }
        if self.store.banned(group, user).await? {
            return Err(ApiError::new(
                ErrorCode::BannedFromGroup,
                "banned from this group",
            ));
        }
        // Asking is adding oneself: the same budget.
        self.limits.user(Limit::MemberAdd, user)?;
        let now = courier_storage::now_ms();
        self.store.request_join(group, user, &message, now).await?;
        let request = JoinRequest {
            group_id: group,
            user_id: user,
            message,
            created_ms: now,
        };
        self.tell_moderators(&request).await?;
        self.join_request_view(request).await
    }

    /// Sends a `JoinRequested` frame to the group's owner and admins online here.
    async fn tell_moderators(&self, request: &JoinRequest) -> Result<(), ApiError> {
        let moderators = self.moderators(request.group_id).await?;
        let frame = encode_frame(&Frame::new(
            0,
            pb::frame::Kind::JoinRequested(pb::JoinRequested {
                group_id: request.group_id,
                user_id: request.user_id,
                message: request.message.clone(),
                created_ms: request.created_ms,
            }),
        ));
        self.registry.push_fanout(
            &[Fanout {
                frame: &frame,
                users: &moderators,
                skip: None,
            }],
            None,
        );
        Ok(())
    }

    /// The owner and admins of `group`, by user id (a walk over the member list,
    /// which the member cap bounds).
    async fn moderators(&self, group: u64) -> Result<Vec<u64>, ApiError> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.members(group, after, MAX_MEMBER_PAGE).await?;
            out.extend(
                page.iter()
                    .filter(|m| m.role >= Role::Admin)
                    .map(|m| m.user_id),
            );
            match page.last() {
                Some(last) if page.len() == MAX_MEMBER_PAGE => after = last.user_id,
                _ => return Ok(out),
            }
        }
    }

    /// Takes back `user`'s own request to join `group`.
    pub async fn cancel_join_request(&self, group: u64, user: u64) -> Result<(), ApiError> {
        self.store
            .take_join_request(group, user)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such join request"))?;
        Ok(())
    }

    /// A page of `group`'s pending requests (owner and admins).
    pub async fn join_requests(
        &self,
        group: u64,
        by: u64,
        after: u64,
        limit: usize,
    ) -> Result<JoinRequestList, ApiError> {
        self.require_moderator(group, by, "see join requests")
            .await?;
        let limit = limit.clamp(1, MAX_MEMBER_PAGE);
        let page = self.store.join_requests(group, after, limit).await?;
        let next_after = (page.len() == limit)
            .then(|| page.last().map(|r| r.user_id))
            .flatten();
        let mut requests = Vec::with_capacity(page.len());
        for r in page {
            requests.push(self.join_request_view(r).await?);
        }
        Ok(JoinRequestList {
            requests,
            next_after,
        })
    }

    /// Approves `user`'s request (owner and admins): it joins the group, announced
    /// by a `MemberJoined` event naming the approver.
    pub async fn approve_join(
        &self,
        group: u64,
        by: u64,
        user: u64,
    ) -> Result<MemberView, ApiError> {
        self.require_moderator(group, by, "approve join requests")
            .await?;
        self.store
            .take_join_request(group, user)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such join request"))?;
        self.join_as_member(group, user, by).await?;
        let member = self
            .store
            .member(group, user)
            .await?
            .ok_or_else(|| ApiError::internal("an approved member is not a member"))?;
        self.member_view(&member).await
    }

    /// Declines `user`'s request (owner and admins).
    pub async fn decline_join(&self, group: u64, by: u64, user: u64) -> Result<(), ApiError> {
        self.require_moderator(group, by, "decline join requests")
            .await?;
        self.cancel_join_request(group, user).await
    }

    async fn join_request_view(&self, r: JoinRequest) -> Result<JoinRequestView, ApiError> {
        Ok(JoinRequestView {
            group_id: r.group_id,
            user_id: r.user_id,
            name: self.name_of(r.user_id).await?,
            message: r.message,
            created_ms: r.created_ms,
        })
    }
}
