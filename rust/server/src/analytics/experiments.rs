//! A/B tests and remote config. The game's server key defines experiments (weighted variants,
//! targeting, running or stopped) and config values; a player reads their assignments, which
//! the SDK caches.
//!
//! Bucketing is deterministic: SHA-256 of (project, experiment, player id) picks a point in the
//! total weight, so a player gets the same variant on every device and every call, and
//! different experiments bucket independently. Changing the weights moves only the players
//! whose point changes of variant. A name listed twice simply gets both weights.

use std::collections::BTreeMap;

use aethex_protocol::analytics::{
    Assignments, ConfigValue, Experiment, ExperimentDefinition, ExperimentList,
};
use aethex_protocol::{ErrorCode, ErrorEnvelope};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::ingest::valid_name;
use crate::app::AppState;
use crate::caller::{Caller, Player};
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::social::ApiQuery;

/// Most experiments or config values per project.
const MAX_PER_PROJECT: i64 = 200;

/// The variant of `variants` (name, weight) that `user_id` falls in.
pub fn bucket<'a>(
    project_id: &str,
    experiment: &str,
    user_id: &str,
    variants: &'a [(String, i64)],
) -> Option<&'a str> {
    let total: i64 = variants.iter().map(|(_, w)| *w).sum();
    if total <= 0 {
        return None;
    }
    let digest = Sha256::digest(format!("{project_id}\n{experiment}\n{user_id}").as_bytes());
    let point = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % total as u64;
    let mut upper = 0u64;
    for (name, weight) in variants {
        upper += *weight as u64;
        if point < upper {
            return Some(name);
        }
    }
    None
}

fn server_project(caller: &Caller) -> ApiResult<&str> {
    match caller {
        Caller::Server(project) => Ok(&project.id),
        Caller::Player(_) => Err(ApiError::forbidden("this needs the game's server key")),
    }
}

fn key(path: Result<Path<String>, PathRejection>) -> ApiResult<String> {
    let Path(key) = path.map_err(|e| ApiError::invalid(e.body_text()))?;
    let valid = valid_name(&key);
    if valid {
        Ok(key)
    } else {
        Err(ApiError::invalid(
            "key must be 1 to 64 of A-Z a-z 0-9 _ . : - starting with a letter, digit or _",
        ))
    }
}

fn check_definition(definition: &ExperimentDefinition) -> ApiResult<()> {
    if definition.variants.is_empty() || definition.variants.len() > 16 {
        return Err(ApiError::invalid("an experiment has 1 to 16 variants"));
    }
    for variant in &definition.variants {
        let name_ok = valid_name(&variant.name);
        if !name_ok {
            return Err(ApiError::invalid(
                "variant names are 1 to 64 of A-Z a-z 0-9 _ . : - starting with a letter, digit or _",
            ));
        }
        if !(1..=10_000).contains(&variant.weight) {
            return Err(ApiError::invalid("variant weights are 1 to 10000"));
        }
    }
    if definition.targeting.platforms.len() > 32 || definition.targeting.builds.len() > 32 {
        return Err(ApiError::invalid(
            "targeting names at most 32 platforms and 32 builds",
        ));
    }
    Ok(())
}

/// Inserts or updates one row of a per-project table, refusing a new key beyond
/// `MAX_PER_PROJECT` in the same statement (atomic under concurrency on both backends).
async fn upsert_capped(
    state: &AppState,
    table: &str,
    value_column: &str,
    project: &str,
    key: &str,
    value: &str,
    extra: Option<i64>,
) -> ApiResult<()> {
    let now = state.clock.now_ms();
    let (columns, values, update) = match extra {
        Some(_) => (
            format!("project_id, key, {value_column}, running, updated_at"),
            "$1, $2, $3, $4, $5",
            format!("{value_column} = excluded.{value_column}, running = excluded.running"),
        ),
        None => (
            format!("project_id, key, {value_column}, updated_at"),
            "$1, $2, $3, $4",
            format!("{value_column} = excluded.{value_column}"),
        ),
    };
    let cap = if extra.is_some() { "$6" } else { "$5" };
    // A new key is inserted only while the project is under the cap; an existing key always
    // updates. (SQLite needs the WHERE to parse an upsert of an INSERT … SELECT.)
    let sql = format!(
        "INSERT INTO {table} ({columns}) SELECT {values} \
         WHERE (SELECT COUNT(*) FROM {table} WHERE project_id = $1) < {cap} \
            OR EXISTS (SELECT 1 FROM {table} WHERE project_id = $1 AND key = $2) \
         ON CONFLICT (project_id, key) DO UPDATE SET {update}, updated_at = excluded.updated_at"
    );
    // The project row is locked first so two new keys cannot both pass the count on
    // PostgreSQL (SQLite's one writer runs these one at a time anyway).
    let mut tx = state.db.write.begin().await?;
    sqlx::query(&format!(
        "SELECT id FROM projects WHERE id = $1{}",
        state.db.lock_rows()
    ))
    .bind(project)
    .fetch_optional(&mut *tx)
    .await?;
    let mut query = sqlx::query(&sql).bind(project).bind(key).bind(value);
    if let Some(running) = extra {
        query = query.bind(running);
    }
    let done = query
        .bind(now)
        .bind(MAX_PER_PROJECT)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::new(
            ErrorCode::QuotaExceeded,
            format!("a project has at most {MAX_PER_PROJECT} of these"),
        ));
    }
    Ok(())
}

fn experiment_of(row: &sqlx::any::AnyRow) -> ApiResult<Experiment> {
    let variants: String = row.try_get("variants")?;
    let parsed: ExperimentDefinition =
        serde_json::from_str(&variants).map_err(ApiError::internal)?;
    Ok(Experiment {
        key: row.try_get("key")?,
        definition: ExperimentDefinition {
            running: row.try_get::<i64, _>("running")? != 0,
            ..parsed
        },
        updated_at: row.try_get("updated_at")?,
    })
}

#[utoipa::path(
    put,
    path = "/api/v1/analytics/experiments/{key}",
    tag = "analytics",
    security(("server_key" = [])),
    params(("key" = String, Path, description = "The experiment", pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")),
    request_body = ExperimentDefinition,
    responses(
        (status = 200, description = "Defined (or redefined)", body = Experiment),
        (status = 403, description = "A player token instead of the server key", body = ErrorEnvelope),
        (status = 413, description = "`quota_exceeded`: the project has 200 experiments", body = ErrorEnvelope),
    )
)]
pub async fn put_experiment(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    ApiJson(definition): ApiJson<ExperimentDefinition>,
) -> ApiResult<Json<Experiment>> {
    let project = server_project(&caller)?;
    let key = key(path)?;
    check_definition(&definition)?;
    let stored = serde_json::to_string(&definition).map_err(ApiError::internal)?;
    upsert_capped(
        &state,
        "analytics_experiments",
        "definition",
        project,
        &key,
        &stored,
        Some(i64::from(definition.running)),
    )
    .await?;
    let row = sqlx::query(
        "SELECT key, definition AS variants, running, updated_at FROM analytics_experiments \
         WHERE project_id = $1 AND key = $2",
    )
    .bind(project)
    .bind(&key)
    .fetch_one(&state.db.write)
    .await?;
    Ok(Json(experiment_of(&row)?))
}

#[utoipa::path(
    get,
    path = "/api/v1/analytics/experiments",
    tag = "analytics",
    security(("server_key" = [])),
    responses(
        (status = 200, description = "Every experiment of the project, by key", body = ExperimentList),
        (status = 403, description = "A player token instead of the server key", body = ErrorEnvelope),
    )
)]
pub async fn list_experiments(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ExperimentList>> {
    let project = server_project(&caller)?;
    let rows = sqlx::query(
        "SELECT key, definition AS variants, running, updated_at FROM analytics_experiments \
         WHERE project_id = $1 ORDER BY key",
    )
    .bind(project)
    .fetch_all(&state.db.read)
    .await?;
    Ok(Json(ExperimentList {
        experiments: rows.iter().map(experiment_of).collect::<ApiResult<_>>()?,
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/analytics/experiments/{key}",
    tag = "analytics",
    security(("server_key" = [])),
    params(("key" = String, Path, description = "The experiment", pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "A player token instead of the server key", body = ErrorEnvelope),
        (status = 404, description = "No such experiment", body = ErrorEnvelope),
    )
)]
pub async fn delete_experiment(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    delete_row(&state, &caller, path, "analytics_experiments").await
}

async fn delete_row(
    state: &AppState,
    caller: &Caller,
    path: Result<Path<String>, PathRejection>,
    table: &str,
) -> ApiResult<StatusCode> {
    let project = server_project(caller)?;
    let key = key(path)?;
    let done = sqlx::query(&format!(
        "DELETE FROM {table} WHERE project_id = $1 AND key = $2"
    ))
    .bind(project)
    .bind(&key)
    .execute(&state.db.write)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("no such key"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    put,
    path = "/api/v1/analytics/config/{key}",
    tag = "analytics",
    security(("server_key" = [])),
    params(("key" = String, Path, description = "The config key", pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")),
    request_body = ConfigValue,
    responses(
        (status = 200, description = "Stored", body = ConfigValue),
        (status = 403, description = "A player token instead of the server key", body = ErrorEnvelope),
        (status = 413, description = "The body is over 1 MiB, or `quota_exceeded`: the project has 200 values", body = ErrorEnvelope),
    )
)]
pub async fn put_config(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<ConfigValue>,
) -> ApiResult<Json<ConfigValue>> {
    let project = server_project(&caller)?;
    let key = key(path)?;
    let text = body.value.to_string();
    upsert_capped(
        &state,
        "analytics_remote_config",
        "value",
        project,
        &key,
        &text,
        None,
    )
    .await?;
    Ok(Json(body))
}

#[utoipa::path(
    delete,
    path = "/api/v1/analytics/config/{key}",
    tag = "analytics",
    security(("server_key" = [])),
    params(("key" = String, Path, description = "The config key", pattern = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "A player token instead of the server key", body = ErrorEnvelope),
        (status = 404, description = "No such key", body = ErrorEnvelope),
    )
)]
pub async fn delete_config(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<StatusCode> {
    delete_row(&state, &caller, path, "analytics_remote_config").await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AssignmentQuery {
    /// The player's platform, for experiments targeting platforms.
    #[param(max_length = 64)]
    pub platform: Option<String>,
    /// The game build, for experiments targeting builds.
    #[param(max_length = 64)]
    pub build: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/analytics/assignments",
    tag = "analytics",
    security(("client_key" = [], "bearer" = [])),
    params(AssignmentQuery),
    responses((status = 200, description = "The player's variant of each running experiment that targets them, and every config value", body = Assignments))
)]
pub async fn assignments(
    State(state): State<AppState>,
    player: Player,
    ApiQuery(query): ApiQuery<AssignmentQuery>,
) -> ApiResult<Json<Assignments>> {
    if query.platform.as_ref().is_some_and(|p| p.len() > 64)
        || query.build.as_ref().is_some_and(|b| b.len() > 64)
    {
        return Err(ApiError::invalid("platform and build are at most 64 bytes"));
    }
    let project = &player.project.id;
    let rows = sqlx::query(
        "SELECT key, definition AS variants, running, updated_at FROM analytics_experiments \
         WHERE project_id = $1 AND running = 1 ORDER BY key",
    )
    .bind(project)
    .fetch_all(&state.db.read)
    .await?;
    let experiments: Vec<Experiment> = rows.iter().map(experiment_of).collect::<ApiResult<_>>()?;
    let properties: BTreeMap<String, Value> = if experiments
        .iter()
        .any(|e| !e.definition.targeting.user_properties.is_empty())
    {
        sqlx::query("SELECT name, value FROM analytics_user_properties WHERE user_id = $1")
            .bind(&player.user_id)
            .fetch_all(&state.db.read)
            .await?
            .iter()
            .map(|row| {
                let text: String = row.try_get("value")?;
                let value = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("value").cloned())
                    .unwrap_or(Value::Null);
                Ok((row.try_get("name")?, value))
            })
            .collect::<Result<_, sqlx::Error>>()?
    } else {
        BTreeMap::new()
    };
    let mut variants = BTreeMap::new();
    for experiment in &experiments {
        let targeting = &experiment.definition.targeting;
        let listed = |list: &[String], value: &Option<String>| {
            list.is_empty() || value.as_ref().is_some_and(|v| list.contains(v))
        };
        let targeted = listed(&targeting.platforms, &query.platform)
            && listed(&targeting.builds, &query.build)
            && targeting
                .user_properties
                .iter()
                .all(|(name, wanted)| properties.get(name) == Some(wanted));
        if !targeted {
            continue;
        }
        let weights: Vec<(String, i64)> = experiment
            .definition
            .variants
            .iter()
            .map(|v| (v.name.clone(), v.weight))
            .collect();
        if let Some(variant) = bucket(project, &experiment.key, &player.user_id, &weights) {
            variants.insert(experiment.key.clone(), variant.to_owned());
        }
    }
    let config: Map<String, Value> =
        sqlx::query("SELECT key, value FROM analytics_remote_config WHERE project_id = $1")
            .bind(project)
            .fetch_all(&state.db.read)
            .await?
            .iter()
            .map(|row| {
                let text: String = row.try_get("value")?;
                Ok((
                    row.try_get("key")?,
                    serde_json::from_str(&text).unwrap_or(Value::Null),
                ))
            })
            .collect::<Result<_, sqlx::Error>>()?;
    Ok(Json(Assignments { variants, config }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketing_is_stable_and_follows_the_weights() {
        let variants = vec![
            ("control".to_owned(), 50),
            ("blue".to_owned(), 30),
            ("green".to_owned(), 20),
        ];
        let players = 100_000;
        let mut counts = std::collections::HashMap::new();
        for n in 0..players {
            let user = format!("user-{n}");
            let first = bucket("p", "button", &user, &variants).unwrap();
            // Stable: the same answer every time (what a second device asks).
            assert_eq!(bucket("p", "button", &user, &variants), Some(first));
            *counts.entry(first).or_insert(0u64) += 1;
        }
        // Pearson's chi-square against the weights: below 13.82, the 0.1% critical value with
        // two degrees of freedom.
        let chi2: f64 = variants
            .iter()
            .map(|(name, weight)| {
                let expected = players as f64 * *weight as f64 / 100.0;
                let observed = counts[name.as_str()] as f64;
                (observed - expected).powi(2) / expected
            })
            .sum();
        assert!(chi2 < 13.82, "chi2 {chi2}: {counts:?}");
        // Another experiment buckets independently: about half of control's players are in
        // control of a 50/50 experiment too.
        let halves = vec![("a".to_owned(), 1), ("b".to_owned(), 1)];
        let both = (0..players)
            .map(|n| format!("user-{n}"))
            .filter(|u| bucket("p", "button", u, &variants) == Some("control"))
            .filter(|u| bucket("p", "other", u, &halves) == Some("a"))
            .count() as f64;
        let control = counts["control"] as f64;
        assert!((both / control - 0.5).abs() < 0.02, "{both} of {control}");
    }
}
