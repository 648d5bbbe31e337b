//! The HTTP API (axum), with its OpenAPI document generated from the same handlers
//! (utoipa): a route cannot exist without being described at `/v1/openapi.json`.
//!
//! Every route is under `/v1`, speaks JSON, and answers errors as
//! `{code, name, message}` with the status that fits the code. All routes except
//! register, login, health and the OpenAPI document need `Authorization: Bearer <token>`.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::{Extension, Json, Router};
use courier_protocol::{ConversationId, ErrorCode};
use courier_storage::{HistoryRange, RelationSet};
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod accounts;
mod admin;
mod app;
mod push;

use crate::api::dto::*;
use crate::api::groups::parse_policy;
use crate::api::join_requests::Joined;
use crate::api::limits::Limit;
use crate::api::relations::RelationChange;
use crate::api::{convert, Api};
use crate::error::ApiError;

/// Largest JSON request body, in bytes.
const MAX_BODY_BYTES: usize = 256 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(title = "Courier HTTP API", version = "1", description = "Accounts, relations, groups, conversations and history."),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The `/v1` routes over `api`, and the OpenAPI document describing them.
pub fn router(api: Arc<Api>) -> Router {
    let (mut router, doc) = routes_with_doc();
    if api.config.app_enabled {
        router = router.merge(app::router());
    }
    router
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .layer(Extension(Arc::new(doc)))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            request_deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            api.clone(),
            address_limit,
        ))
        .with_state(api)
}

/// Every request counts against its client address's budget (per-user budgets are
/// taken once the caller is known, in [`Caller`]).
async fn address_limit(
    State(api): State<Arc<Api>>,
    ClientAddr(from): ClientAddr,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match api.limits.address(Limit::HttpAddress, from) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// The client's address (from the connection; `0.0.0.0` when served without one).
pub struct ClientAddr(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip()),
        ))
    }
}

/// Every request is answered within `http_request_timeout_ms`, or gets
/// `REQUEST_TIMEOUT`. Uploads stream for as long as bytes keep coming (their body is
/// bounded between chunks by `http_body_timeout_ms`).
async fn request_deadline(
    State(api): State<Arc<Api>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let upload =
        request.method() == axum::http::Method::POST && request.uri().path() == "/v1/media";
    if upload {
        return next.run(request).await;
    }
    let limit = std::time::Duration::from_millis(api.config.http_request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(ErrorCode::RequestTimeout, "the request took too long").into_response()
        }
    }
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes_with_doc().1
}

fn routes_with_doc() -> (Router<Arc<Api>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .routes(routes!(accounts::register))
        .routes(routes!(accounts::login))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::logout_everywhere))
        .routes(routes!(accounts::change_password))
        .routes(routes!(accounts::me, accounts::update_me))
        .routes(routes!(accounts::user_by_name))
        .routes(routes!(accounts::search_users))
        .routes(routes!(relation))
        .routes(routes!(friends))
        .routes(routes!(friend_requests, request_friend))
        .routes(routes!(accept_friend))
        .routes(routes!(decline_friend))
        .routes(routes!(cancel_friend_request))
        .routes(routes!(remove_friend))
        .routes(routes!(following))
        .routes(routes!(followers))
        .routes(routes!(follow, unfollow))
        .routes(routes!(blocks))
        .routes(routes!(block, unblock))
        .routes(routes!(my_groups, create_group))
        .routes(routes!(group_info, update_group))
        .routes(routes!(group_members, add_members))
        .routes(routes!(remove_member))
        .routes(routes!(set_role))
        .routes(routes!(mute_group))
        .routes(routes!(set_announcement))
        .routes(routes!(dismiss_group))
        .routes(routes!(mute_member))
        .routes(routes!(join_group, cancel_join_request))
        .routes(routes!(join_requests))
        .routes(routes!(approve_join))
        .routes(routes!(decline_join))
        .routes(routes!(bans))
        .routes(routes!(ban, unban))
        .routes(routes!(leave_group))
        .routes(routes!(transfer_group))
        .routes(routes!(invitations))
        .routes(routes!(accept_invitation))
        .routes(routes!(decline_invitation))
        .routes(routes!(conversations))
        .routes(routes!(update_conversation))
        .routes(routes!(history))
        .routes(routes!(mark_read))
        .routes(routes!(reads))
        .routes(routes!(recall))
        .routes(routes!(edit))
        .routes(routes!(add_reaction, remove_reaction))
        .routes(routes!(hide))
        .routes(routes!(delete_conversation))
        .routes(routes!(reactors))
        .routes(routes!(devices))
        .routes(routes!(remove_device))
        .routes(routes!(push::set_push_token, push::remove_push_token))
        .routes(routes!(presence))
        .routes(routes!(stats))
        .routes(routes!(crate::api::media::upload))
        .routes(routes!(crate::api::media::download))
        .routes(routes!(crate::api::media::refresh_url))
        .routes(routes!(crate::api::media::release))
        .routes(routes!(crate::api::media::block))
        .routes(routes!(metrics))
        .merge(admin_routes())
        .split_for_parts()
}

/// The admin API's routes (on the HTTP listener with the admin token, and on the
/// operator listener).
fn admin_routes() -> OpenApiRouter<Arc<Api>> {
    OpenApiRouter::new()
        .routes(routes!(admin::import_users))
        .routes(routes!(admin::mint_token))
        .routes(routes!(admin::force_logout))
        .routes(routes!(admin::ban, admin::unban))
        .routes(routes!(admin::erase))
        .routes(routes!(admin::remove_device))
        .routes(routes!(admin::send))
        .routes(routes!(admin::notify))
        .routes(routes!(admin::online))
}

/// The authenticated caller of a request (its per-user request budget taken).
pub struct Caller {
    /// User id.
    pub user_id: u64,
    /// The hash of the bearer token it presented.
    pub credential: courier_storage::TokenHash,
    /// When that token expires (ms since the epoch).
    pub credential_expires_ms: u64,
}

impl FromRequestParts<Arc<Api>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthenticated, "missing Authorization header")
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthenticated,
                    "expected `Authorization: Bearer <token>`",
                )
            })?
            .trim();
        let token = api.authenticate(token).await?;
        api.limits.user(Limit::HttpUser, token.user_id)?;
        Ok(Caller {
            user_id: token.user_id,
            credential: token.hash,
            credential_expires_ms: token.expires_ms,
        })
    }
}

pub(crate) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v)
        .map_err(|e| ApiError::invalid(format!("bad JSON body: {}", e.body_text())))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::invalid(format!("bad query: {}", e.body_text())))
}

fn conversation(api: &Api, id: &str) -> Result<ConversationId, ApiError> {
    api.parse_conversation(id)
}

pub(crate) type ApiResult<T> = Result<Json<T>, ApiError>;

/// Liveness and a few gauges: `ok`, or `degraded` (503) while the store cannot write
/// (a full or failing disk); reads are still served then.
#[utoipa::path(get, path = "/v1/health", tag = "server",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health(State(api): State<Arc<Api>>) -> (StatusCode, Json<Health>) {
    let writable = api.storage_writable();
    let status = match writable {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let health = Health {
        status: if writable { "ok" } else { "degraded" }.into(),
        storage: if writable { "ok" } else { "unavailable" }.into(),
        online_devices: api.registry.online_devices(),
        store_queued: api.storage_queued(),
        cluster: api.cluster.as_ref().map(|c| c.health()),
    };
    (status, Json(health))
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "server", responses((status = 200, description = "OpenAPI 3.1 document")))]
async fn openapi_json(
    Extension(doc): Extension<Arc<utoipa::openapi::OpenApi>>,
) -> Json<utoipa::openapi::OpenApi> {
    Json((*doc).clone())
}

/// Paging of relation lists.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// Start after this id.
    after: Option<u64>,
    /// Page size (default 100, at most 500).
    limit: Option<usize>,
}

/// How the caller relates to a user.
#[utoipa::path(get, path = "/v1/relations/{user_id}", tag = "relations", security(("bearer" = [])),
    params(("user_id" = u64, Path)), responses((status = 200, body = RelationView), (status = 404, body = ErrorBody)))]
async fn relation(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(peer): Path<u64>,
) -> ApiResult<RelationView> {
    Ok(Json(api.relation_view(caller.user_id, peer).await?))
}

/// One page of the caller's relations in `set` (the relation-list routes).
async fn relation_page(
    api: &Api,
    caller: Caller,
    q: Result<Query<PageQuery>, QueryRejection>,
    set: RelationSet,
) -> ApiResult<RelationList> {
    let q = query(q)?;
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(100));
    Ok(Json(
        api.relation_list(caller.user_id, after, limit, set).await?,
    ))
}

/// The caller's friends, with their names.
#[utoipa::path(get, path = "/v1/friends", tag = "relations", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = RelationList)))]
async fn friends(
    State(api): State<Arc<Api>>,
    caller: Caller,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<RelationList> {
    relation_page(&api, caller, q, RelationSet::Friends).await
}

/// Pending friend requests, to and from the caller.
#[utoipa::path(get, path = "/v1/friends/requests", tag = "relations", security(("bearer" = [])),
    responses((status = 200, body = FriendRequests)))]
async fn friend_requests(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<FriendRequests> {
    Ok(Json(api.friend_requests(caller.user_id).await?))
}

/// Ask a user to be friends (if they asked you already, you are friends at once).
#[utoipa::path(post, path = "/v1/friends/requests", tag = "relations", security(("bearer" = [])),
    request_body = FriendRequestBody,
    responses((status = 200, body = RelationView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn request_friend(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: Result<Json<FriendRequestBody>, JsonRejection>,
) -> ApiResult<RelationView> {
    let body = json_body(body)?;
    let peer = match (body.user_id, body.name) {
        (Some(id), _) => id,
        (None, Some(name)) => api.find_user(&name).await?.0,
        (None, None) => return Err(ApiError::invalid("give `user_id` or `name`")),
    };
    Ok(Json(
        api.change_relation(caller.user_id, peer, RelationChange::Request)
            .await?,
    ))
}

/// Accept a pending request from a user.
#[utoipa::path(post, path = "/v1/friends/requests/{user_id}/accept", tag = "relations", security(("bearer" = [])),
    params(("user_id" = u64, Path)), responses((status = 200, body = RelationView), (status = 404, body = ErrorBody)))]
async fn accept_friend(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(peer): Path<u64>,
) -> ApiResult<RelationView> {
    Ok(Json(
        api.change_relation(caller.user_id, peer, RelationChange::Accept)
            .await?,
    ))
}

/// Decline a pending request from a user.
#[utoipa::path(post, path = "/v1/friends/requests/{user_id}/decline", tag = "relations", security(("bearer" = [])),
    params(("user_id" = u64, Path)), responses((status = 200, body = RelationView), (status = 404, body = ErrorBody)))]
async fn decline_friend(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(peer): Path<u64>,
) -> ApiResult<RelationView> {
    Ok(Json(
        api.change_relation(caller.user_id, peer, RelationChange::Decline)
            .await?,
    ))
}

/// Withdraw the caller's pending request to a user.
#[utoipa::path(delete, path = "/v1/friends/requests/{user_id}", tag = "relations", security(("bearer" = [])),
    params(("user_id" = u64, Path)), responses((status = 200, body = RelationView), (status = 404, body = ErrorBody)))]
async fn cancel_friend_request(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(peer): Path<u64>,
) -> ApiResult<RelationView> {
    Ok(Json(
        api.change_relation(caller.user_id, peer, RelationChange::Cancel)
            .await?,
    ))
}

/// End a friendship.
#[utoipa::path(delete, path = "/v1/friends/{user_id}", tag = "relations", security(("bearer" = [])),
    params(("user_id" = u64, Path)), responses((status = 200, body = RelationView), (status = 404, body = ErrorBody)))]
async fn remove_friend(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(peer): Path<u64>,
) -> ApiResult<RelationView> {
    Ok(Json(
        api.change_relation(caller.user_id, peer, RelationChange::Unfriend)
            .await?,
    ))
}

/// Users the caller follows (one-way).
#[utoipa::path(get, path = "/v1/following", tag = "relations", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = RelationList)))]
async fn following(
    State(api): State<Arc<Api>>,
    caller: Caller,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<RelationList> {
    relation_page(&api, caller, q, RelationSet::Following).await
}

/// Users who follow the caller.
#[utoipa::path(get, path = "/v1/followers", tag = "relations", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = RelationList)))]
async fn followers(
    State(api): State<Arc<Api>>,
    caller: Caller,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<RelationList> {
    relation_page(&api, caller, q, RelationSet::Followers).await
}

/// Follow a user.
#[utoipa::path(put, path = "/v1/following/{user_id}", tag = "relations", security(("bearer" = [])),
    params(("user_id" = u64, Path)), responses((status = 200, body = RelationView), (status = 403, body = ErrorBody)))]
async fn follow(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(peer): Path<u64>,
) -> ApiResult<RelationView> {
    Ok(Json(
        api.change_relation(caller.user_id, peer, RelationChange::Follow(true))
            .await?,
    ))
}

/// Stop following a user.
#[utoipa::path(delete, path = "/v1/following/{user_id}", tag = "relations", security(("bearer" = [])),
    params(("user_id" = u64, Path)), responses((status = 200, body = RelationView)))]
async fn unfollow(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(peer): Path<u64>,
) -> ApiResult<RelationView> {
    Ok(Json(
        api.change_relation(caller.user_id, peer, RelationChange::Follow(false))
            .await?,
    ))
}

/// Users the caller blocks.
#[utoipa::path(get, path = "/v1/blocks", tag = "relations", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = RelationList)))]
async fn blocks(
    State(api): State<Arc<Api>>,
    caller: Caller,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<RelationList> {
    relation_page(&api, caller, q, RelationSet::Blocking).await
}

/// Block a user: it can no longer message the caller or see its presence.
#[utoipa::path(put, path = "/v1/blocks/{user_id}", tag = "relations", security(("bearer" = [])),
    params(("user_id" = u64, Path)), responses((status = 200, body = RelationView)))]
async fn block(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(peer): Path<u64>,
) -> ApiResult<RelationView> {
    Ok(Json(
        api.change_relation(caller.user_id, peer, RelationChange::Block(true))
            .await?,
    ))
}

/// Unblock a user.
#[utoipa::path(delete, path = "/v1/blocks/{user_id}", tag = "relations", security(("bearer" = [])),
    params(("user_id" = u64, Path)), responses((status = 200, body = RelationView)))]
async fn unblock(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(peer): Path<u64>,
) -> ApiResult<RelationView> {
    Ok(Json(
        api.change_relation(caller.user_id, peer, RelationChange::Block(false))
            .await?,
    ))
}

/// The caller's groups.
#[utoipa::path(get, path = "/v1/groups", tag = "groups", security(("bearer" = [])),
    responses((status = 200, body = GroupList)))]
async fn my_groups(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<GroupList> {
    Ok(Json(GroupList {
        groups: api.groups_of(caller.user_id).await?,
    }))
}

/// Create a group; the caller owns it.
#[utoipa::path(post, path = "/v1/groups", tag = "groups", security(("bearer" = [])), request_body = CreateGroup,
    responses((status = 201, body = GroupView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_group(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: Result<Json<CreateGroup>, JsonRejection>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let body = json_body(body)?;
    let policy = body.join_policy.as_deref().map(parse_policy).transpose()?;
    let view = api
        .create_group(
            caller.user_id,
            body.name,
            policy.unwrap_or(courier_storage::JoinPolicy::InviteOnly),
            body.history_visible.unwrap_or(false),
            body.members,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// A group's info (members; anyone for open groups).
#[utoipa::path(get, path = "/v1/groups/{group_id}", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)), responses((status = 200, body = GroupView), (status = 404, body = ErrorBody)))]
async fn group_info(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
) -> ApiResult<GroupView> {
    Ok(Json(api.group_info(group, caller.user_id).await?))
}

/// Rename or change settings (owner, admins).
#[utoipa::path(patch, path = "/v1/groups/{group_id}", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)), request_body = UpdateGroup,
    responses((status = 200, body = GroupView), (status = 403, body = ErrorBody)))]
async fn update_group(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
    body: Result<Json<UpdateGroup>, JsonRejection>,
) -> ApiResult<GroupView> {
    let body = json_body(body)?;
    let policy = body.join_policy.as_deref().map(parse_policy).transpose()?;
    let settings = body.name.is_some() || policy.is_some() || body.history_visible.is_some();
    let profile = body.description.is_some() || body.avatar.is_some();
    let mut view = None;
    if settings || !profile {
        view = Some(
            api.update_group(
                group,
                caller.user_id,
                body.name,
                policy,
                body.history_visible,
            )
            .await?,
        );
    }
    if profile {
        view = Some(
            api.set_group_profile(group, caller.user_id, body.description, body.avatar)
                .await?,
        );
    }
    Ok(Json(view.expect("one of the two ran")))
}

/// Dismiss the group (owner only): a `GroupDismissed` event; from it on nobody sends
/// or joins, and the members keep the history, read-only.
#[utoipa::path(delete, path = "/v1/groups/{group_id}", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)),
    responses((status = 200, body = GroupView), (status = 403, body = ErrorBody)))]
async fn dismiss_group(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
) -> ApiResult<GroupView> {
    Ok(Json(api.dismiss_group(group, caller.user_id).await?))
}

/// Pin an announcement (owner, admins; empty text takes it down): a new version,
/// announced to the members by an `AnnouncementChanged` event.
#[utoipa::path(put, path = "/v1/groups/{group_id}/announcement", tag = "groups",
    security(("bearer" = [])),
    params(("group_id" = u64, Path)), request_body = AnnouncementBody,
    responses((status = 200, body = GroupView), (status = 403, body = ErrorBody)))]
async fn set_announcement(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
    body: Result<Json<AnnouncementBody>, JsonRejection>,
) -> ApiResult<GroupView> {
    let text = json_body(body)?.text;
    Ok(Json(
        api.set_announcement(group, caller.user_id, text).await?,
    ))
}

/// A page of members, by user id (members only).
#[utoipa::path(get, path = "/v1/groups/{group_id}/members", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path), PageQuery),
    responses((status = 200, body = MemberList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn group_members(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<MemberList> {
    let q = query(q)?;
    Ok(Json(
        api.group_members(
            group,
            caller.user_id,
            q.after.unwrap_or(0),
            q.limit.unwrap_or(100),
        )
        .await?,
    ))
}

/// Add users (owner, admins; any member of an open group).
#[utoipa::path(post, path = "/v1/groups/{group_id}/members", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)), request_body = AddMembers,
    responses((status = 200, body = AddedMembers), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn add_members(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
    body: Result<Json<AddMembers>, JsonRejection>,
) -> ApiResult<AddedMembers> {
    let body = json_body(body)?;
    Ok(Json(
        api.add_members(group, caller.user_id, body.user_ids)
            .await?,
    ))
}

/// Remove a member (owner: anyone; admins: plain members).
#[utoipa::path(delete, path = "/v1/groups/{group_id}/members/{user_id}", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path), ("user_id" = u64, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_member(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((group, user)): Path<(u64, u64)>,
) -> Result<StatusCode, ApiError> {
    api.remove_member(group, caller.user_id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Make a member admin or plain member (owner only).
#[utoipa::path(put, path = "/v1/groups/{group_id}/members/{user_id}/role", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path), ("user_id" = u64, Path)), request_body = RoleBody,
    responses((status = 200, body = MemberView), (status = 403, body = ErrorBody)))]
async fn set_role(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((group, user)): Path<(u64, u64)>,
    body: Result<Json<RoleBody>, JsonRejection>,
) -> ApiResult<MemberView> {
    let role = Api::parse_role(&json_body(body)?.role)?;
    Ok(Json(api.set_role(group, caller.user_id, user, role).await?))
}

/// Mute or unmute the whole group: only the owner and admins may send (owner and
/// admins). A `GroupMuted` event goes to the members.
#[utoipa::path(put, path = "/v1/groups/{group_id}/mute", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)), request_body = MuteGroupBody,
    responses((status = 200, body = GroupView), (status = 403, body = ErrorBody)))]
async fn mute_group(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
    body: Result<Json<MuteGroupBody>, JsonRejection>,
) -> ApiResult<GroupView> {
    let body = json_body(body)?;
    Ok(Json(
        api.mute_group(group, caller.user_id, body.muted).await?,
    ))
}

/// Mute a member for a time (`duration_ms` 0 unmutes): owner and admins mute
/// members, only the owner mutes admins. A `MemberMuted` event goes to the members;
/// the member's sends are refused with `MUTED` from it on.
#[utoipa::path(put, path = "/v1/groups/{group_id}/members/{user_id}/mute", tag = "groups",
    security(("bearer" = [])),
    params(("group_id" = u64, Path), ("user_id" = u64, Path)), request_body = MuteMemberBody,
    responses((status = 200, body = MemberView), (status = 403, body = ErrorBody)))]
async fn mute_member(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((group, user)): Path<(u64, u64)>,
    body: Result<Json<MuteMemberBody>, JsonRejection>,
) -> ApiResult<MemberView> {
    let body = json_body(body)?;
    Ok(Json(
        api.mute_member(group, caller.user_id, user, body.duration_ms)
            .await?,
    ))
}

/// Join an open group (200, the group), or ask to join a group that approves its
/// members (202, the pending request; its owner and admins are told). The body,
/// optional, carries the request's message.
#[utoipa::path(post, path = "/v1/groups/{group_id}/join", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)), request_body = JoinBody,
    responses((status = 200, body = GroupView), (status = 202, body = JoinRequestView),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn join_group(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
    body: axum::body::Bytes,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let body: JoinBody = match body.is_empty() {
        true => JoinBody::default(),
        false => serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("bad JSON body: {e}")))?,
    };
    Ok(
        match api
            .join_or_request(group, caller.user_id, body.message)
            .await?
        {
            Joined::Member(view) => Json(view).into_response(),
            Joined::Requested(request) => (StatusCode::ACCEPTED, Json(request)).into_response(),
        },
    )
}

/// Take back the caller's request to join a group.
#[utoipa::path(delete, path = "/v1/groups/{group_id}/join", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn cancel_join_request(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
) -> Result<StatusCode, ApiError> {
    api.cancel_join_request(group, caller.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of the group's pending join requests, by user id (owner and admins).
#[utoipa::path(get, path = "/v1/groups/{group_id}/join-requests", tag = "groups",
    security(("bearer" = [])), params(("group_id" = u64, Path), PageQuery),
    responses((status = 200, body = JoinRequestList), (status = 403, body = ErrorBody)))]
async fn join_requests(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<JoinRequestList> {
    let q = query(q)?;
    Ok(Json(
        api.join_requests(
            group,
            caller.user_id,
            q.after.unwrap_or(0),
            q.limit.unwrap_or(100),
        )
        .await?,
    ))
}

/// Approve a join request (owner and admins): the user joins, with a `MemberJoined`
/// event naming the approver.
#[utoipa::path(post, path = "/v1/groups/{group_id}/join-requests/{user_id}/approve", tag = "groups",
    security(("bearer" = [])), params(("group_id" = u64, Path), ("user_id" = u64, Path)),
    responses((status = 200, body = MemberView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn approve_join(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((group, user)): Path<(u64, u64)>,
) -> ApiResult<MemberView> {
    Ok(Json(api.approve_join(group, caller.user_id, user).await?))
}

/// Decline a join request (owner and admins).
#[utoipa::path(delete, path = "/v1/groups/{group_id}/join-requests/{user_id}", tag = "groups",
    security(("bearer" = [])), params(("group_id" = u64, Path), ("user_id" = u64, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn decline_join(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((group, user)): Path<(u64, u64)>,
) -> Result<StatusCode, ApiError> {
    api.decline_join(group, caller.user_id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A page of the group's bans, by user id (owner and admins).
#[utoipa::path(get, path = "/v1/groups/{group_id}/bans", tag = "groups",
    security(("bearer" = [])), params(("group_id" = u64, Path), PageQuery),
    responses((status = 200, body = BanList), (status = 403, body = ErrorBody)))]
async fn bans(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
    q: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<BanList> {
    let q = query(q)?;
    Ok(Json(
        api.bans(
            group,
            caller.user_id,
            q.after.unwrap_or(0),
            q.limit.unwrap_or(100),
        )
        .await?,
    ))
}

/// Ban a user (owner and admins; only the owner bans an admin): a member is
/// removed, with a `MemberBanned` event as its last message; nobody banned joins
/// again, by any way, until the ban is lifted.
#[utoipa::path(put, path = "/v1/groups/{group_id}/bans/{user_id}", tag = "groups",
    security(("bearer" = [])), params(("group_id" = u64, Path), ("user_id" = u64, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn ban(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((group, user)): Path<(u64, u64)>,
) -> Result<StatusCode, ApiError> {
    api.ban_member(group, caller.user_id, user, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lift a ban (owner and admins).
#[utoipa::path(delete, path = "/v1/groups/{group_id}/bans/{user_id}", tag = "groups",
    security(("bearer" = [])), params(("group_id" = u64, Path), ("user_id" = u64, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unban(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((group, user)): Path<(u64, u64)>,
) -> Result<StatusCode, ApiError> {
    api.ban_member(group, caller.user_id, user, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Leave a group (the owner transfers ownership first).
#[utoipa::path(post, path = "/v1/groups/{group_id}/leave", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)), responses((status = 204), (status = 403, body = ErrorBody)))]
async fn leave_group(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
) -> Result<StatusCode, ApiError> {
    api.remove_member(group, caller.user_id, caller.user_id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Hand ownership to another member (owner only).
#[utoipa::path(post, path = "/v1/groups/{group_id}/transfer", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)), request_body = TransferBody,
    responses((status = 200, body = GroupView), (status = 403, body = ErrorBody)))]
async fn transfer_group(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
    body: Result<Json<TransferBody>, JsonRejection>,
) -> ApiResult<GroupView> {
    let body = json_body(body)?;
    Ok(Json(
        api.transfer_group(group, caller.user_id, body.user_id)
            .await?,
    ))
}

/// The caller's pending group invitations.
#[utoipa::path(get, path = "/v1/invitations", tag = "groups", security(("bearer" = [])),
    responses((status = 200, body = InvitationList)))]
async fn invitations(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<InvitationList> {
    Ok(Json(InvitationList {
        invitations: api.invitations(caller.user_id).await?,
    }))
}

/// Accept an invitation: join the group.
#[utoipa::path(post, path = "/v1/invitations/{group_id}/accept", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)),
    responses((status = 200, body = GroupView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn accept_invitation(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
) -> ApiResult<GroupView> {
    Ok(Json(api.accept_invitation(group, caller.user_id).await?))
}

/// Decline an invitation.
#[utoipa::path(delete, path = "/v1/invitations/{group_id}", tag = "groups", security(("bearer" = [])),
    params(("group_id" = u64, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn decline_invitation(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(group): Path<u64>,
) -> Result<StatusCode, ApiError> {
    api.decline_invitation(group, caller.user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Paging of the conversation list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size (default 50, at most 200).
    limit: Option<usize>,
}

/// The caller's conversations: pinned first, then by last activity.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = ConversationList)))]
async fn conversations(
    State(api): State<Arc<Api>>,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<ConversationList> {
    let q = query(q)?;
    Ok(Json(
        api.conversation_list(caller.user_id, q.cursor.as_deref(), q.limit.unwrap_or(50))
            .await?,
    ))
}

/// Mute or pin a conversation.
#[utoipa::path(patch, path = "/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id, `d:<user>:<user>` or `g:<group>`")),
    request_body = ConversationFlags,
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_conversation(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<ConversationFlags>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let body = json_body(body)?;
    let c = conversation(&api, &id)?;
    api.set_conversation_flags(caller.user_id, &c, body.muted, body.pinned)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which page of history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Messages below this seq (newest first side).
    before: Option<u64>,
    /// Messages above this seq.
    after: Option<u64>,
    /// Page size (default 20, capped by `history_max_page`).
    limit: Option<usize>,
}

/// A page of a conversation's history, in ascending seq order.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id"), HistoryQuery),
    responses((status = 200, body = HistoryPage), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn history(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<HistoryPage> {
    let q = query(q)?;
    let c = conversation(&api, &id)?;
    let range = match (q.before, q.after) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give `before` or `after`, not both")),
        (Some(before), None) => HistoryRange::Before(before),
        (None, Some(after)) => HistoryRange::After(after),
        (None, None) => HistoryRange::Latest,
    };
    if q.limit == Some(0) {
        return Err(ApiError::invalid("limit must be at least 1"));
    }
    let page = api
        .history(caller.user_id, &c, range, q.limit.unwrap_or(0))
        .await?;
    let mut reactions = api
        .reactions_of(caller.user_id, &c, page.messages.iter().map(|m| m.seq))
        .await?;
    Ok(Json(HistoryPage {
        conversation: c.to_string(),
        messages: page
            .messages
            .iter()
            .map(|m| MessageView {
                reactions: convert::reactions_view(&reactions.remove(&m.seq).unwrap_or_default()),
                ..convert::to_view(m)
            })
            .collect(),
        has_more: page.has_more,
        retained_from_seq: api.retention_floor(&c).await? + 1,
    }))
}

/// Move the caller's read cursor forward; the caller's devices are told.
#[utoipa::path(post, path = "/v1/conversations/{id}/read", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id")), request_body = ReadBody,
    responses((status = 200, body = ReadState), (status = 403, body = ErrorBody)))]
async fn mark_read(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<ReadBody>, JsonRejection>,
) -> ApiResult<ReadState> {
    let body = json_body(body)?;
    let c = conversation(&api, &id)?;
    let read_seq = api.mark_read(caller.user_id, &c, body.seq, None).await?;
    Ok(Json(ReadState {
        conversation: c.to_string(),
        read_seq,
    }))
}

/// Who has read message `seq`: the count, and the readers for 1:1 conversations and
/// groups up to the receipt push limit (participants only).
#[utoipa::path(get, path = "/v1/conversations/{id}/messages/{seq}/reads", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id"), ("seq" = u64, Path)),
    responses((status = 200, body = ReadsView), (status = 403, body = ErrorBody)))]
async fn reads(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((id, seq)): Path<(String, u64)>,
) -> ApiResult<ReadsView> {
    let c = conversation(&api, &id)?;
    Ok(Json(api.reads(caller.user_id, &c, seq).await?))
}

/// Recall a message (the sender within the recall window; group owner and admins).
#[utoipa::path(post, path = "/v1/conversations/{id}/messages/{seq}/recall", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id"), ("seq" = u64, Path)),
    responses((status = 200, body = RecallView), (status = 403, body = ErrorBody), (status = 400, body = ErrorBody)))]
async fn recall(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((id, seq)): Path<(String, u64)>,
) -> ApiResult<RecallView> {
    let c = conversation(&api, &id)?;
    let ack = api.recall(caller.user_id, "", &c, seq).await?;
    Ok(Json(RecallView {
        conversation: ack.conversation,
        seq: ack.seq,
        event_seq: ack.event_seq,
    }))
}

/// Edit the text of one's own text message (within `edit_window_ms`; nobody else
/// may). The edit is an event in the log; history shows the latest text with an
/// `edited` mark.
#[utoipa::path(patch, path = "/v1/conversations/{id}/messages/{seq}", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id"), ("seq" = u64, Path)),
    request_body = EditBody,
    responses((status = 200, body = EditView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
async fn edit(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((id, seq)): Path<(String, u64)>,
    Json(body): Json<EditBody>,
) -> ApiResult<EditView> {
    let c = conversation(&api, &id)?;
    let text = courier_protocol::pb::Text {
        text: body.text,
        mentions: body.mentions,
        mention_all: false,
    };
    let ack = api.edit(caller.user_id, "", &c, seq, text).await?;
    Ok(Json(EditView {
        conversation: ack.conversation,
        seq: ack.seq,
        event_seq: ack.event_seq,
        edited_at_ms: ack.edited_at_ms,
    }))
}

/// React to a message with an emoji (anyone who may see it). In big groups the
/// answer waits for the window that gathers the group's reactions into one event.
#[utoipa::path(put, path = "/v1/conversations/{id}/messages/{seq}/reactions/{emoji}",
    tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id"), ("seq" = u64, Path),
        ("emoji" = String, Path, description = "the reaction, percent-encoded")),
    responses((status = 200, body = ReactView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
async fn add_reaction(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((id, seq, emoji)): Path<(String, u64, String)>,
) -> ApiResult<ReactView> {
    react(&api, &caller, &id, seq, &emoji, true).await
}

/// Take one's reaction back.
#[utoipa::path(delete, path = "/v1/conversations/{id}/messages/{seq}/reactions/{emoji}",
    tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id"), ("seq" = u64, Path),
        ("emoji" = String, Path, description = "the reaction, percent-encoded")),
    responses((status = 200, body = ReactView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)))]
async fn remove_reaction(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((id, seq, emoji)): Path<(String, u64, String)>,
) -> ApiResult<ReactView> {
    react(&api, &caller, &id, seq, &emoji, false).await
}

async fn react(
    api: &Api,
    caller: &Caller,
    id: &str,
    seq: u64,
    emoji: &str,
    add: bool,
) -> ApiResult<ReactView> {
    let c = conversation(api, id)?;
    let ack = api.react(caller.user_id, &c, seq, emoji, add).await?;
    Ok(Json(ReactView {
        conversation: ack.conversation,
        seq: ack.seq,
        emoji: ack.emoji,
        changed: ack.changed,
        event_seq: ack.event_seq,
    }))
}

/// Who reacted to a message with one emoji, by ascending user id.
#[utoipa::path(get, path = "/v1/conversations/{id}/messages/{seq}/reactions",
    tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id"), ("seq" = u64, Path), ReactorQuery),
    responses((status = 200, body = ReactorPage), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn reactors(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path((id, seq)): Path<(String, u64)>,
    q: Result<Query<ReactorQuery>, QueryRejection>,
) -> ApiResult<ReactorPage> {
    let q = query(q)?;
    let c = conversation(&api, &id)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let users = api
        .reactors(
            caller.user_id,
            &c,
            seq,
            &q.emoji,
            q.after.unwrap_or(0),
            limit,
        )
        .await?;
    let next_after = (users.len() == limit)
        .then(|| users.last().map(|u| u.0))
        .flatten();
    Ok(Json(ReactorPage {
        users: users
            .into_iter()
            .map(|(user_id, at_ms)| ReactorView { user_id, at_ms })
            .collect(),
        next_after,
    }))
}

/// Delete messages for the caller alone, on all its devices, or clear its history
/// through a seq; nobody else's view changes.
#[utoipa::path(post, path = "/v1/conversations/{id}/hide", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id")),
    request_body = HideBody,
    responses((status = 200, body = HiddenView), (status = 403, body = ErrorBody),
        (status = 400, body = ErrorBody)))]
async fn hide(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<HideBody>,
) -> ApiResult<HiddenView> {
    hide_for(&api, &caller, &id, body).await
}

/// Delete the conversation from the caller's list (its history cleared through the
/// newest message; the next message brings it back). Nobody else's view changes.
#[utoipa::path(delete, path = "/v1/conversations/{id}", tag = "conversations",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "conversation id")),
    responses((status = 200, body = HiddenView), (status = 403, body = ErrorBody)))]
async fn delete_conversation(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<HiddenView> {
    let body = HideBody {
        delete_conversation: true,
        ..HideBody::default()
    };
    hide_for(&api, &caller, &id, body).await
}

async fn hide_for(api: &Api, caller: &Caller, id: &str, body: HideBody) -> ApiResult<HiddenView> {
    let c = conversation(api, id)?;
    let hide = courier_protocol::pb::Hide {
        conversation: c.to_string(),
        seqs: body.seqs,
        clear_through: body.clear_through,
        delete_conversation: body.delete_conversation,
    };
    let hidden = api.hide(caller.user_id, "", &c, &hide).await?;
    Ok(Json(HiddenView {
        conversation: hidden.conversation,
        seqs: hidden.seqs,
        cleared_seq: hidden.cleared_seq,
        view_version: hidden.view_version,
    }))
}

/// The caller's bound devices.
#[utoipa::path(get, path = "/v1/devices", tag = "devices", security(("bearer" = [])),
    responses((status = 200, body = DeviceList)))]
async fn devices(State(api): State<Arc<Api>>, caller: Caller) -> ApiResult<DeviceList> {
    Ok(Json(DeviceList {
        devices: api.devices(caller.user_id).await?,
    }))
}

/// Unbind a device: every token it used is revoked and its sessions end with
/// `LOGGED_OUT`; it must log in again with the password.
#[utoipa::path(delete, path = "/v1/devices/{device_id}", tag = "devices", security(("bearer" = [])),
    params(("device_id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_device(
    State(api): State<Arc<Api>>,
    caller: Caller,
    Path(device): Path<String>,
) -> Result<StatusCode, ApiError> {
    api.remove_device(caller.user_id, &device).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which users to ask about.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PresenceQuery {
    /// Comma-separated user ids (at most 256).
    users: String,
}

/// Presence on demand (how pull-only users are seen).
#[utoipa::path(get, path = "/v1/presence", tag = "presence", security(("bearer" = [])), params(PresenceQuery),
    responses((status = 200, body = PresenceList), (status = 400, body = ErrorBody)))]
async fn presence(
    State(api): State<Arc<Api>>,
    caller: Caller,
    q: Result<Query<PresenceQuery>, QueryRejection>,
) -> ApiResult<PresenceList> {
    let q = query(q)?;
    let ids = q
        .users
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| ApiError::invalid("users is a list of ids"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.len() > crate::api::presence::MAX_SUBSCRIBE_TARGETS {
        return Err(ApiError::invalid("at most 256 users at once"));
    }
    Ok(Json(api.presence_of(caller.user_id, &ids).await?))
}

/// Marks requests that arrive on the operator listener (`admin_addr`), which needs
/// no token: it is meant to be bound where only operators and Prometheus reach it.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl Operator {
    /// Lets an operator request through: one on the operator listener, or one with
    /// `Authorization: Bearer <admin_token>` (compared in constant time).
    pub fn check(api: &Api, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let expected = api.config.admin_token.as_bytes();
        let ok = !expected.is_empty()
            && given.is_some_and(|g| {
                g.len() == expected.len()
                    && g.bytes()
                        .zip(expected.iter())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            });
        if ok {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "operator route: needs the admin token (or use the admin listener)",
            ))
        }
    }
}

/// An operator's request: one on the operator listener, or one with the admin token.
/// Handlers that take it are operator-only.
pub struct OperatorAccess;

impl FromRequestParts<Arc<Api>> for OperatorAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        if parts.extensions.get::<Operator>().is_none() {
            Operator::check(api, &parts.headers)?;
        }
        Ok(OperatorAccess)
    }
}

/// Counters of presence and read receipts (operators: admin token, or the admin
/// listener).
#[utoipa::path(get, path = "/v1/stats", tag = "server", security(("bearer" = [])),
    responses((status = 200, body = Stats), (status = 403, body = ErrorBody)))]
async fn stats(State(api): State<Arc<Api>>, _: OperatorAccess) -> ApiResult<Stats> {
    Ok(Json(Stats {
        online_devices: api.registry.online_devices(),
        presence: api.presence.counters.snapshot(),
        receipts: api.receipts.counters.snapshot(),
    }))
}

/// Operator metrics in the Prometheus text format (operators: admin token, or the
/// admin listener).
#[utoipa::path(get, path = "/metrics", tag = "server", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain"),
        (status = 403, body = ErrorBody)))]
async fn metrics(
    State(api): State<Arc<Api>>,
    _: OperatorAccess,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::metrics::render(&api),
    ))
}

/// The operator listener's routes: `/metrics`, `/v1/stats` and `/v1/health`, without
/// a token. Bind it (`admin_addr`) where only operators and Prometheus reach it.
pub fn operator_router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/v1/stats", axum::routing::get(stats))
        .route("/v1/health", axum::routing::get(health))
        .merge(admin_routes().split_for_parts().0)
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .layer(Extension(Operator))
        .with_state(api)
}
