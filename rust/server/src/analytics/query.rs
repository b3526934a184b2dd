//! Query API (server key): answers from the rollups maintained on ingest.

use aethex_protocol::analytics::{ActiveDay, ActiveResponse};
use aethex_protocol::ErrorEnvelope;
use axum::extract::State;
use axum::Json;
use chrono::{Datelike, NaiveDate};
use serde::Deserialize;
use sqlx::Row;

use super::store::DAY_MS;
use crate::app::AppState;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::social::ApiQuery;

/// Longest range of one query, in days.
pub const MAX_QUERY_DAYS: i64 = 366;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActiveQuery {
    /// Last UTC day of the range (`YYYY-MM-DD`); today when absent.
    #[param(format = Date)]
    pub to: Option<String>,
    /// Days in the range, ending at `to`.
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<i64>,
}

/// Days since 1970-01-01 (what `analytics_events.day` stores).
pub fn day_number(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce()) - 719_163
}

pub fn day_date(day: i64) -> String {
    i32::try_from(day + 719_163)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn server_project(caller: &Caller) -> ApiResult<&str> {
    match caller {
        Caller::Server(project) => Ok(&project.id),
        Caller::Player(_) => Err(ApiError::forbidden(
            "analytics queries need the game's server key",
        )),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/analytics/query/active",
    tag = "analytics",
    security(("server_key" = [])),
    params(ActiveQuery),
    responses(
        (status = 200, description = "Daily, weekly and monthly active players for each day, oldest first", body = ActiveResponse),
        (status = 403, description = "A player token instead of the server key", body = ErrorEnvelope),
    )
)]
pub async fn active(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ActiveQuery>,
) -> ApiResult<Json<ActiveResponse>> {
    let project = server_project(&caller)?;
    let days = query.days.unwrap_or(30);
    if !(1..=MAX_QUERY_DAYS).contains(&days) {
        return Err(ApiError::invalid(format!(
            "days must be 1 to {MAX_QUERY_DAYS}"
        )));
    }
    let last = match query.to.as_deref() {
        Some(text) => day_number(
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| ApiError::invalid("to must be a date like 2026-11-30"))?,
        ),
        None => state.clock.now_ms().div_euclid(DAY_MS),
    };
    let first = last - days + 1;
    // One statement: the day series, and for each day the distinct players of the 1-, 7- and
    // 30-day windows ending there, all read from the one-row-per-player-day rollup.
    let rows = sqlx::query(
        "WITH RECURSIVE days(d) AS (SELECT CAST($1 AS BIGINT) UNION ALL \
             SELECT d + 1 FROM days WHERE d < $2) \
         SELECT d, \
           (SELECT COUNT(*) FROM analytics_daily_players p \
             WHERE p.project_id = $3 AND p.day = d) AS dau, \
           (SELECT COUNT(DISTINCT p.user_id) FROM analytics_daily_players p \
             WHERE p.project_id = $3 AND p.day BETWEEN d - 6 AND d) AS wau, \
           (SELECT COUNT(DISTINCT p.user_id) FROM analytics_daily_players p \
             WHERE p.project_id = $3 AND p.day BETWEEN d - 29 AND d) AS mau \
         FROM days ORDER BY d",
    )
    .bind(first)
    .bind(last)
    .bind(project)
    .fetch_all(&state.db.read)
    .await?;
    let days = rows
        .iter()
        .map(|row| {
            Ok(ActiveDay {
                day: day_date(row.try_get("d")?),
                dau: row.try_get("dau")?,
                wau: row.try_get("wau")?,
                mau: row.try_get("mau")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Json(ActiveResponse { days }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_round_trip() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        assert_eq!(day_number(epoch), 0);
        let date = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let day = day_number(date);
        assert_eq!(day, 1_795_996_800_000 / DAY_MS);
        assert_eq!(day_date(day), "2026-11-30");
    }
}
