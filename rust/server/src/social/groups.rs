//! Groups (clans, teams): `/api/v1/groups/*`.
//!
//! Roles rank owner > admin > member; `invited` and `requested` are pending memberships. Role
//! rules: admins accept requests, invite, kick anyone ranked below them and promote members to
//! admin; only the owner demotes admins or hands ownership over (promoting an admin makes them
//! owner and the old owner an admin). The owner leaves last: with other members left, ownership
//! must be handed over first; the last member leaving deletes the group.

use aethex_protocol::social::{
    CreateGroupRequest, Group, GroupInviteRequest, GroupList, GroupMember, GroupMembers, GroupRole,
};
use aethex_protocol::ErrorEnvelope;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use utoipa::{IntoParams, OpenApi};

use super::ApiQuery;
use super::{ensure_user_in_project, page_limit, prefix_pattern};
use crate::app::AppState;
use crate::caller::Player;
use crate::db::{get_flag, is_unique_violation, new_id, Db};
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/groups", get(search_groups).post(create_group))
        .route("/api/v1/groups/mine", get(my_groups))
        .route("/api/v1/groups/{id}", get(get_group))
        .route("/api/v1/groups/{id}/members", get(list_members))
        .route("/api/v1/groups/{id}/join", post(join_group))
        .route("/api/v1/groups/{id}/leave", post(leave_group))
        .route("/api/v1/groups/{id}/invite", post(invite))
        .route(
            "/api/v1/groups/{id}/members/{user_id}/{action}",
            post(member_action),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(
        search_groups,
        create_group,
        my_groups,
        get_group,
        list_members,
        join_group,
        leave_group,
        invite,
        member_action
    ),
    components(schemas(
        CreateGroupRequest,
        Group,
        GroupInviteRequest,
        GroupList,
        GroupMember,
        GroupMembers,
        GroupRole
    ))
)]
pub struct GroupsApi;

fn role_name(r: GroupRole) -> &'static str {
    match r {
        GroupRole::Requested => "requested",
        GroupRole::Invited => "invited",
        GroupRole::Member => "member",
        GroupRole::Admin => "admin",
        GroupRole::Owner => "owner",
    }
}

fn parse_role(s: &str) -> GroupRole {
    match s {
        "owner" => GroupRole::Owner,
        "admin" => GroupRole::Admin,
        "invited" => GroupRole::Invited,
        "requested" => GroupRole::Requested,
        _ => GroupRole::Member,
    }
}

const GROUP_SELECT: &str = "SELECT g.id, g.name, g.description, g.open, g.max_members, g.created_at, \
     (SELECT COUNT(*) FROM group_members m WHERE m.group_id = g.id AND m.role IN ('member', 'admin', 'owner')) AS member_count \
     FROM social_groups g";

fn group_from_row(row: &AnyRow, my_role: Option<GroupRole>) -> Result<Group, sqlx::Error> {
    Ok(Group {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        open: get_flag(row, "open")?,
        max_members: row.try_get("max_members")?,
        member_count: row.try_get("member_count")?,
        created_at: row.try_get("created_at")?,
        my_role,
    })
}

async fn load_group(
    conn: &mut AnyConnection,
    project_id: &str,
    group_id: &str,
    user_id: &str,
) -> ApiResult<Group> {
    let sql = format!("{GROUP_SELECT} WHERE g.id = $1 AND g.project_id = $2");
    let row = sqlx::query(&sql)
        .bind(group_id)
        .bind(project_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found("no such group"))?;
    let role = role_of(conn, group_id, user_id).await?;
    Ok(group_from_row(&row, role)?)
}

/// Locks the group's row for the rest of the transaction. Every membership change takes it
/// first, so on PostgreSQL changes to one group run one at a time and each sees the member count
/// and roles the previous one committed (the `max_members` cap, the owner leaving last).
async fn lock_group(
    conn: &mut AnyConnection,
    db: &Db,
    project_id: &str,
    group_id: &str,
) -> ApiResult<()> {
    sqlx::query(&format!(
        "SELECT id FROM social_groups WHERE id = $1 AND project_id = $2{}",
        db.lock_rows()
    ))
    .bind(group_id)
    .bind(project_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("no such group"))?;
    Ok(())
}

async fn role_of(
    conn: &mut AnyConnection,
    group_id: &str,
    user_id: &str,
) -> ApiResult<Option<GroupRole>> {
    let row = sqlx::query("SELECT role FROM group_members WHERE group_id = $1 AND user_id = $2")
        .bind(group_id)
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row
        .map(|r| r.try_get::<String, _>("role"))
        .transpose()?
        .map(|r| parse_role(&r)))
}

async fn set_role(
    conn: &mut AnyConnection,
    group_id: &str,
    user_id: &str,
    role: GroupRole,
    now_ms: i64,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO group_members (group_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (group_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(group_id)
    .bind(user_id)
    .bind(role_name(role))
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn remove_member(conn: &mut AnyConnection, group_id: &str, user_id: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
        .bind(group_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/groups",
    tag = "groups",
    security(("client_key" = [], "bearer" = [])),
    request_body = CreateGroupRequest,
    responses(
        (status = 200, description = "Created; the caller owns it", body = Group),
        (status = 400, description = "Bad name or size", body = ErrorEnvelope),
        (status = 409, description = "Name taken", body = ErrorEnvelope),
    )
)]
pub async fn create_group(
    State(state): State<AppState>,
    player: Player,
    ApiJson(req): ApiJson<CreateGroupRequest>,
) -> ApiResult<Json<Group>> {
    let name = req.name.trim();
    if !(3..=64).contains(&name.chars().count()) {
        return Err(ApiError::invalid("group name must be 3 to 64 characters"));
    }
    if req.description.chars().count() > 1024 {
        return Err(ApiError::invalid(
            "description must be at most 1024 characters",
        ));
    }
    if !(1..=10_000).contains(&req.max_members) {
        return Err(ApiError::invalid("max_members must be 1 to 10000"));
    }
    let now = state.clock.now_ms();
    let id = new_id();
    let mut tx = state.db.write.begin().await?;
    sqlx::query(
        "INSERT INTO social_groups (id, project_id, name, name_lower, description, open, max_members, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(&player.project.id)
    .bind(name)
    .bind(name.to_lowercase())
    .bind(&req.description)
    .bind(req.open as i64)
    .bind(req.max_members)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            ApiError::conflict(format!("a group named {name:?} already exists"))
        } else {
            e.into()
        }
    })?;
    set_role(&mut tx, &id, &player.user_id, GroupRole::Owner, now).await?;
    let group = load_group(&mut tx, &player.project.id, &id, &player.user_id).await?;
    tx.commit().await?;
    Ok(Json(group))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Name prefix (case-insensitive); all groups when absent.
    q: Option<String>,
    /// Default 20, at most 100.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/groups",
    tag = "groups",
    security(("client_key" = [], "bearer" = [])),
    params(SearchQuery),
    responses((status = 200, description = "Groups by name", body = GroupList))
)]
pub async fn search_groups(
    State(state): State<AppState>,
    player: Player,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<GroupList>> {
    let limit = page_limit(q.limit, 20, 100)?;
    let pattern = prefix_pattern(&q.q.unwrap_or_default().trim().to_lowercase());
    let sql = format!(
        "{GROUP_SELECT} LEFT JOIN group_members me ON me.group_id = g.id AND me.user_id = $1 \
         WHERE g.project_id = $2 AND g.name_lower LIKE $3 ESCAPE '\\' ORDER BY g.name_lower LIMIT $4"
    )
    .replacen("SELECT g.id,", "SELECT me.role AS my_role, g.id,", 1);
    let rows = sqlx::query(&sql)
        .bind(&player.user_id)
        .bind(&player.project.id)
        .bind(pattern)
        .bind(limit as i64)
        .fetch_all(&state.db.read)
        .await?;
    let groups = rows
        .iter()
        .map(|row| {
            let role: Option<String> = row.try_get("my_role")?;
            group_from_row(row, role.map(|r| parse_role(&r)))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Json(GroupList { groups }))
}

#[utoipa::path(
    get,
    path = "/api/v1/groups/mine",
    tag = "groups",
    security(("client_key" = [], "bearer" = [])),
    responses((status = 200, description = "Groups the caller belongs to, is invited to or asked to join", body = GroupList))
)]
pub async fn my_groups(
    State(state): State<AppState>,
    player: Player,
) -> ApiResult<Json<GroupList>> {
    let sql = format!(
        "{GROUP_SELECT} JOIN group_members me ON me.group_id = g.id AND me.user_id = $1 WHERE g.project_id = $2 ORDER BY g.name_lower"
    );
    let sql = sql.replacen("SELECT g.id,", "SELECT me.role AS my_role, g.id,", 1);
    let rows = sqlx::query(&sql)
        .bind(&player.user_id)
        .bind(&player.project.id)
        .fetch_all(&state.db.read)
        .await?;
    let groups = rows
        .iter()
        .map(|row| {
            let role: String = row.try_get("my_role")?;
            group_from_row(row, Some(parse_role(&role)))
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Json(GroupList { groups }))
}

#[utoipa::path(
    get,
    path = "/api/v1/groups/{id}",
    tag = "groups",
    security(("client_key" = [], "bearer" = [])),
    params(("id" = String, Path, description = "Group id")),
    responses(
        (status = 200, description = "The group", body = Group),
        (status = 404, description = "No such group", body = ErrorEnvelope),
    )
)]
pub async fn get_group(
    State(state): State<AppState>,
    player: Player,
    Path(id): Path<String>,
) -> ApiResult<Json<Group>> {
    let mut conn = state.db.read.acquire().await?;
    Ok(Json(
        load_group(&mut conn, &player.project.id, &id, &player.user_id).await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/groups/{id}/members",
    tag = "groups",
    security(("client_key" = [], "bearer" = [])),
    params(("id" = String, Path, description = "Group id")),
    responses(
        (status = 200, description = "Members by role; pending invites and requests only for admins", body = GroupMembers),
        (status = 404, description = "No such group", body = ErrorEnvelope),
    )
)]
pub async fn list_members(
    State(state): State<AppState>,
    player: Player,
    Path(id): Path<String>,
) -> ApiResult<Json<GroupMembers>> {
    let mut conn = state.db.read.acquire().await?;
    let group = load_group(&mut conn, &player.project.id, &id, &player.user_id).await?;
    let sees_pending = group.my_role.is_some_and(|r| r >= GroupRole::Admin);
    let rows = sqlx::query(
        "SELECT m.user_id, m.role, m.created_at, u.username FROM group_members m JOIN users u ON u.id = m.user_id \
         WHERE m.group_id = $1 ORDER BY m.created_at, m.user_id",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?;
    let mut members = Vec::with_capacity(rows.len());
    for row in rows {
        let role = parse_role(&row.try_get::<String, _>("role")?);
        if role < GroupRole::Member && !sees_pending {
            continue;
        }
        members.push(GroupMember {
            user_id: row.try_get("user_id")?,
            username: row.try_get("username")?,
            role,
            since: row.try_get("created_at")?,
        });
    }
    members.sort_by_key(|m| std::cmp::Reverse(m.role));
    Ok(Json(GroupMembers { members }))
}

#[utoipa::path(
    post,
    path = "/api/v1/groups/{id}/join",
    tag = "groups",
    security(("client_key" = [], "bearer" = [])),
    params(("id" = String, Path, description = "Group id")),
    responses(
        (status = 200, description = "Joined (open group or invited), or a join request is pending (closed group): see `my_role`", body = Group),
        (status = 404, description = "No such group", body = ErrorEnvelope),
        (status = 409, description = "Already a member, or the group is full", body = ErrorEnvelope),
    )
)]
pub async fn join_group(
    State(state): State<AppState>,
    player: Player,
    Path(id): Path<String>,
) -> ApiResult<Json<Group>> {
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    lock_group(&mut tx, &state.db, &player.project.id, &id).await?;
    let group = load_group(&mut tx, &player.project.id, &id, &player.user_id).await?;
    let new_role = match group.my_role {
        Some(r) if r >= GroupRole::Member => {
            return Err(ApiError::conflict("you are already a member"))
        }
        Some(GroupRole::Requested) => return Ok(Json(group)),
        Some(GroupRole::Invited) => GroupRole::Member,
        _ if group.open => GroupRole::Member,
        _ => GroupRole::Requested,
    };
    if new_role == GroupRole::Member && group.member_count >= group.max_members {
        return Err(ApiError::conflict("the group is full"));
    }
    set_role(&mut tx, &id, &player.user_id, new_role, now).await?;
    let group = load_group(&mut tx, &player.project.id, &id, &player.user_id).await?;
    tx.commit().await?;
    Ok(Json(group))
}

#[utoipa::path(
    post,
    path = "/api/v1/groups/{id}/leave",
    tag = "groups",
    security(("client_key" = [], "bearer" = [])),
    params(("id" = String, Path, description = "Group id")),
    responses(
        (status = 204, description = "Left (or withdrew a request/invite); the last member leaving deletes the group"),
        (status = 404, description = "No such group, or not in it", body = ErrorEnvelope),
        (status = 409, description = "The owner must hand ownership over first", body = ErrorEnvelope),
    )
)]
pub async fn leave_group(
    State(state): State<AppState>,
    player: Player,
    Path(id): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    let mut tx = state.db.write.begin().await?;
    lock_group(&mut tx, &state.db, &player.project.id, &id).await?;
    let group = load_group(&mut tx, &player.project.id, &id, &player.user_id).await?;
    match group.my_role {
        None => return Err(ApiError::not_found("you are not in this group")),
        Some(GroupRole::Owner) if group.member_count > 1 => {
            return Err(ApiError::conflict(
                "the owner must promote an admin to owner before leaving",
            ))
        }
        Some(GroupRole::Owner) => {
            sqlx::query("DELETE FROM group_members WHERE group_id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM social_groups WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        Some(_) => remove_member(&mut tx, &id, &player.user_id).await?,
    }
    tx.commit().await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/api/v1/groups/{id}/invite",
    tag = "groups",
    security(("client_key" = [], "bearer" = [])),
    params(("id" = String, Path, description = "Group id")),
    request_body = GroupInviteRequest,
    responses(
        (status = 200, description = "Invited (or, if they had asked to join, accepted)", body = GroupMember),
        (status = 403, description = "Only admins and the owner invite", body = ErrorEnvelope),
        (status = 404, description = "No such group or player", body = ErrorEnvelope),
        (status = 409, description = "Already a member", body = ErrorEnvelope),
    )
)]
pub async fn invite(
    State(state): State<AppState>,
    player: Player,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<GroupInviteRequest>,
) -> ApiResult<Json<GroupMember>> {
    ensure_user_in_project(&state, &player.project.id, &req.user_id).await?;
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    lock_group(&mut tx, &state.db, &player.project.id, &id).await?;
    let group = load_group(&mut tx, &player.project.id, &id, &player.user_id).await?;
    if group.my_role.is_none_or(|r| r < GroupRole::Admin) {
        return Err(ApiError::forbidden("only admins and the owner invite"));
    }
    let role = match role_of(&mut tx, &id, &req.user_id).await? {
        Some(r) if r >= GroupRole::Member => {
            return Err(ApiError::conflict("that player is already a member"))
        }
        Some(GroupRole::Requested) => GroupRole::Member,
        _ => GroupRole::Invited,
    };
    if role == GroupRole::Member && group.member_count >= group.max_members {
        return Err(ApiError::conflict("the group is full"));
    }
    set_role(&mut tx, &id, &req.user_id, role, now).await?;
    tx.commit().await?;
    member(&state, &id, &req.user_id).await.map(Json)
}

async fn member(state: &AppState, group_id: &str, user_id: &str) -> ApiResult<GroupMember> {
    let row = sqlx::query(
        "SELECT m.role, m.created_at, u.username FROM group_members m JOIN users u ON u.id = m.user_id WHERE m.group_id = $1 AND m.user_id = $2",
    )
    .bind(group_id)
    .bind(user_id)
    .fetch_optional(&state.db.read)
    .await?
    .ok_or_else(|| ApiError::not_found("not in this group"))?;
    Ok(GroupMember {
        user_id: user_id.to_owned(),
        username: row.try_get("username")?,
        role: parse_role(&row.try_get::<String, _>("role")?),
        since: row.try_get("created_at")?,
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/groups/{id}/members/{user_id}/{action}",
    tag = "groups",
    security(("client_key" = [], "bearer" = [])),
    params(
        ("id" = String, Path, description = "Group id"),
        ("user_id" = String, Path, description = "The member acted on"),
        ("action" = String, Path, description = "`accept` (a join request), `kick`, `promote` or `demote`", pattern = "^(accept|kick|promote|demote)$"),
    ),
    responses(
        (status = 200, description = "The member afterwards (kick answers their last role)", body = GroupMember),
        (status = 400, description = "Unknown action", body = ErrorEnvelope),
        (status = 403, description = "Your role does not allow this, or acting on yourself", body = ErrorEnvelope),
        (status = 404, description = "No such group or member", body = ErrorEnvelope),
        (status = 409, description = "The member's state does not allow this (e.g. accepting a non-request)", body = ErrorEnvelope),
    )
)]
pub async fn member_action(
    State(state): State<AppState>,
    player: Player,
    Path((id, target, action)): Path<(String, String, String)>,
) -> ApiResult<Json<GroupMember>> {
    if target == player.user_id {
        return Err(ApiError::forbidden(
            "act on another member; to leave, use /leave",
        ));
    }
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    lock_group(&mut tx, &state.db, &player.project.id, &id).await?;
    let group = load_group(&mut tx, &player.project.id, &id, &player.user_id).await?;
    let actor = group
        .my_role
        .filter(|r| *r >= GroupRole::Admin)
        .ok_or_else(|| ApiError::forbidden("only admins and the owner manage members"))?;
    let current = role_of(&mut tx, &id, &target)
        .await?
        .ok_or_else(|| ApiError::not_found("that player is not in this group"))?;
    match action.as_str() {
        "accept" => {
            if current != GroupRole::Requested {
                return Err(ApiError::conflict("that player has not asked to join"));
            }
            if group.member_count >= group.max_members {
                return Err(ApiError::conflict("the group is full"));
            }
            set_role(&mut tx, &id, &target, GroupRole::Member, now).await?;
        }
        "kick" => {
            if current >= actor {
                return Err(ApiError::forbidden(
                    "you can only remove members ranked below you",
                ));
            }
            let username: String = sqlx::query("SELECT username FROM users WHERE id = $1")
                .bind(&target)
                .fetch_one(&mut *tx)
                .await?
                .try_get("username")?;
            remove_member(&mut tx, &id, &target).await?;
            tx.commit().await?;
            return Ok(Json(GroupMember {
                user_id: target,
                username,
                role: current,
                since: now,
            }));
        }
        "promote" => match current {
            GroupRole::Member => {
                set_role(&mut tx, &id, &target, GroupRole::Admin, now).await?;
            }
            GroupRole::Admin if actor == GroupRole::Owner => {
                set_role(&mut tx, &id, &target, GroupRole::Owner, now).await?;
                set_role(&mut tx, &id, &player.user_id, GroupRole::Admin, now).await?;
            }
            GroupRole::Admin => {
                return Err(ApiError::forbidden("only the owner hands over ownership"))
            }
            _ => {
                return Err(ApiError::conflict(
                    "only members and admins can be promoted",
                ))
            }
        },
        "demote" => match current {
            GroupRole::Admin if actor == GroupRole::Owner => {
                set_role(&mut tx, &id, &target, GroupRole::Member, now).await?;
            }
            GroupRole::Admin | GroupRole::Owner => {
                return Err(ApiError::forbidden("only the owner demotes admins"))
            }
            _ => return Err(ApiError::conflict("only admins can be demoted")),
        },
        other => {
            return Err(ApiError::invalid(format!(
                "unknown member action {other:?}: use accept, kick, promote or demote"
            )))
        }
    }
    tx.commit().await?;
    member(&state, &id, &target).await.map(Json)
}
