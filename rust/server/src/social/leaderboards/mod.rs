//! Leaderboards: `/api/v1/leaderboards/*`.
//!
//! SQL (`lb_entries`) is the source of truth; each board keeps the rank index of its current and
//! previous period in memory. Writes to one board pass one gate: the SQL write commits first,
//! then the index changes, so the index never shows what SQL does not hold and a restart rebuilds
//! the same order (`reached_at`, `seq` are stored). Other periods are read from SQL on demand.
//!
//! In a cluster (`crate::cluster`) other nodes write the same boards, so a write reads the entry
//! and the next `seq` from SQL under a lock on the board's row (the gate across nodes), and
//! announces the change: every node applies it to its index (newest `seq` wins), and a board
//! defined on one node is installed on the others.

pub mod board;
pub mod handlers;
pub mod index;
pub mod period;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use aethex_protocol::social::{LeaderboardDefinition, LeaderboardEntry, ScoreOperator, SortOrder};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{AnyConnection, Row};

pub use handlers::LeaderboardsApi;

use self::board::{PeriodIndex, Ranked, StoredEntry};
use self::period::Schedule;
use crate::app::AppState;
use crate::cluster::Cluster;
use crate::db::{get_flag, Db};
use crate::error::{ApiError, ApiResult};

/// Largest metadata per entry, as JSON text.
const MAX_METADATA_BYTES: usize = 4096;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/leaderboards",
            get(handlers::list_boards).post(handlers::create_board),
        )
        .route(
            "/api/v1/leaderboards/{id}",
            get(handlers::read_board).put(handlers::put_board),
        )
        .route("/api/v1/leaderboards/{id}/scores", post(handlers::submit))
        .route(
            "/api/v1/leaderboards/{id}/ranks/{user_id}",
            get(handlers::player_rank),
        )
}

/// A definition with its parsed schedule.
#[derive(Debug, Clone)]
pub struct BoardDef {
    pub def: LeaderboardDefinition,
    pub schedule: Schedule,
}

impl BoardDef {
    /// Bounds and operator rules for one submitted value: 409 when broken, since the request is
    /// well formed and only this board's settings refuse it.
    pub fn check_score(&self, score: i64) -> ApiResult<()> {
        let d = &self.def;
        if d.min_score.is_some_and(|min| score < min) || d.max_score.is_some_and(|max| score > max)
        {
            return Err(ApiError::conflict(format!(
                "score {score} is outside this leaderboard's bounds"
            ))
            .with_details(
                serde_json::json!({"min_score": d.min_score, "max_score": d.max_score}),
            ));
        }
        if d.operator == ScoreOperator::Sum && score < 0 {
            return Err(ApiError::conflict(
                "this leaderboard sums scores; a negative score is not allowed",
            ));
        }
        Ok(())
    }
}

pub type SharedIndex = Arc<RwLock<PeriodIndex>>;

pub struct Board {
    pub project_id: String,
    def: RwLock<Arc<BoardDef>>,
    /// Serializes writes so SQL and the index change in the same order.
    write_gate: tokio::sync::Mutex<()>,
    /// Rank indexes of the current and previous period, by period start.
    periods: Mutex<HashMap<i64, SharedIndex>>,
}

impl Board {
    pub fn def(&self) -> Arc<BoardDef> {
        self.def.read().expect("lock").clone()
    }
}

/// Where a read looks.
#[derive(Debug, Clone, Copy)]
pub enum PeriodSel {
    Current,
    Previous,
    Start(i64),
}

pub struct Leaderboards {
    db: Db,
    boards: RwLock<HashMap<(String, String), Arc<Board>>>,
    /// Set when other nodes write the same boards.
    cluster: Option<Arc<Cluster>>,
}

/// One entry as it stands after a write, as announced to the other nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryChange {
    pub project_id: String,
    pub board_id: String,
    pub period: i64,
    pub user_id: String,
    pub score: i64,
    pub num_scores: i64,
    pub reached_at: i64,
    pub seq: i64,
}

/// An entry's stored extras.
struct Details {
    username: String,
    metadata: Value,
}

/// The outcome of applying a submission to an entry.
pub struct Applied {
    pub period: i64,
    pub entry: LeaderboardEntry,
}

impl Leaderboards {
    /// Loads every definition and builds the index of each board's current period.
    pub async fn load(db: &Db, now_ms: i64, cluster: Option<Arc<Cluster>>) -> anyhow::Result<Self> {
        let rows = sqlx::query(
            "SELECT project_id, id, sort_order, operator, reset, min_score, max_score, server_authoritative, stat FROM lb_boards",
        )
        .fetch_all(&db.read)
        .await?;
        let this = Self {
            db: db.clone(),
            boards: Default::default(),
            cluster,
        };
        for row in rows {
            let project_id: String = row.try_get("project_id")?;
            let def = LeaderboardDefinition {
                id: row.try_get("id")?,
                sort_order: parse_sort(&row.try_get::<String, _>("sort_order")?),
                operator: parse_operator(&row.try_get::<String, _>("operator")?),
                reset: row.try_get("reset")?,
                min_score: row.try_get("min_score")?,
                max_score: row.try_get("max_score")?,
                server_authoritative: get_flag(&row, "server_authoritative")?,
                stat: row.try_get("stat")?,
            };
            let schedule = Schedule::parse(&def.reset).map_err(|e| anyhow::anyhow!("{e}"))?;
            let board = Arc::new(Board {
                project_id: project_id.clone(),
                def: RwLock::new(Arc::new(BoardDef { def, schedule })),
                write_gate: Default::default(),
                periods: Default::default(),
            });
            this.index_for(&board, board.def().schedule.period_start(now_ms), now_ms)
                .await?;
            let id = board.def().def.id.clone();
            this.boards
                .write()
                .expect("lock")
                .insert((project_id, id), board);
        }
        Ok(this)
    }

    pub fn get(&self, project_id: &str, board_id: &str) -> ApiResult<Arc<Board>> {
        self.boards
            .read()
            .expect("lock")
            .get(&(project_id.to_owned(), board_id.to_owned()))
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no leaderboard {board_id:?}")))
    }

    pub fn list(&self, project_id: &str) -> Vec<LeaderboardDefinition> {
        let mut list: Vec<_> = self
            .boards
            .read()
            .expect("lock")
            .values()
            .filter(|b| b.project_id == project_id)
            .map(|b| b.def().def.clone())
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Boards of the project fed by statistic `stat`.
    pub fn fed_by_stat(&self, project_id: &str, stat: &str) -> Vec<Arc<Board>> {
        self.boards
            .read()
            .expect("lock")
            .values()
            .filter(|b| b.project_id == project_id && b.def().def.stat.as_deref() == Some(stat))
            .cloned()
            .collect()
    }

    /// Creates or replaces a definition. Changing the sort order re-ranks from SQL.
    pub async fn define(
        &self,
        project_id: &str,
        def: LeaderboardDefinition,
        now_ms: i64,
    ) -> ApiResult<LeaderboardDefinition> {
        super::validate_id("leaderboard", &def.id)?;
        if let Some(stat) = &def.stat {
            super::validate_id("stat", stat)?;
        }
        if let (Some(min), Some(max)) = (def.min_score, def.max_score) {
            if min > max {
                // Conflict rather than invalid: each field is valid, together they contradict.
                return Err(ApiError::conflict("min_score is above max_score"));
            }
        }
        // Checked before anything is stored.
        Schedule::parse(&def.reset)?;
        sqlx::query(
            "INSERT INTO lb_boards (project_id, id, sort_order, operator, reset, min_score, max_score, server_authoritative, stat, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (project_id, id) DO UPDATE SET sort_order = excluded.sort_order, operator = excluded.operator, reset = excluded.reset, \
             min_score = excluded.min_score, max_score = excluded.max_score, server_authoritative = excluded.server_authoritative, \
             stat = excluded.stat, updated_at = excluded.updated_at",
        )
        .bind(project_id)
        .bind(&def.id)
        .bind(sort_name(def.sort_order))
        .bind(operator_name(def.operator))
        .bind(&def.reset)
        .bind(def.min_score)
        .bind(def.max_score)
        .bind(def.server_authoritative as i64)
        .bind(&def.stat)
        .bind(now_ms)
        .execute(&self.db.write)
        .await?;
        self.install(project_id, def.clone()).await?;
        if let Some(cluster) = &self.cluster {
            cluster.leaderboard_defined(project_id, def.clone());
        }
        Ok(def)
    }

    /// Puts a stored definition in memory (this node's write, or another node's).
    pub async fn install(&self, project_id: &str, def: LeaderboardDefinition) -> ApiResult<()> {
        let schedule = Schedule::parse(&def.reset)?;
        let key = (project_id.to_owned(), def.id.clone());
        let new_def = Arc::new(BoardDef {
            def: def.clone(),
            schedule,
        });
        let existing = self.boards.read().expect("lock").get(&key).cloned();
        match existing {
            Some(board) => {
                let _gate = board.write_gate.lock().await;
                let old = board.def();
                *board.def.write().expect("lock") = new_def;
                if old.def.sort_order != def.sort_order || old.def.reset != def.reset {
                    board.periods.lock().expect("lock").clear();
                }
            }
            None => {
                let board = Arc::new(Board {
                    project_id: project_id.to_owned(),
                    def: RwLock::new(new_def),
                    write_gate: Default::default(),
                    periods: Default::default(),
                });
                self.boards
                    .write()
                    .expect("lock")
                    .entry(key)
                    .or_insert(board);
            }
        }
        Ok(())
    }

    /// Another node's write: applied to the cached index of that period, if any (an uncached
    /// period is read from SQL when needed). An older write arriving late changes nothing.
    pub fn apply_remote(&self, change: EntryChange) {
        let Ok(board) = self.get(&change.project_id, &change.board_id) else {
            return;
        };
        let index = board
            .periods
            .lock()
            .expect("lock")
            .get(&change.period)
            .cloned();
        if let Some(index) = index {
            upsert_newest(
                &index,
                &change.user_id,
                change.score,
                change.num_scores,
                change.reached_at,
                change.seq,
            );
        }
    }

    /// The index of `period`: cached for the current and previous period, loaded from SQL
    /// otherwise (not cached, so arbitrary period ids cannot grow memory).
    async fn index_for(&self, board: &Board, period: i64, now_ms: i64) -> ApiResult<SharedIndex> {
        let def = board.def();
        let current = def.schedule.period_start(now_ms);
        let previous = def.schedule.previous_start(current);
        let cacheable = period == current || Some(period) == previous;
        if let Some(index) = board.periods.lock().expect("lock").get(&period) {
            return Ok(index.clone());
        }
        let rows = sqlx::query(
            "SELECT user_id, score, num_scores, reached_at, seq FROM lb_entries WHERE project_id = $1 AND board_id = $2 AND period = $3",
        )
        .bind(&board.project_id)
        .bind(&def.def.id)
        .bind(period)
        .fetch_all(&self.db.read)
        .await?;
        let entries = rows
            .into_iter()
            .map(|r| {
                Ok(StoredEntry {
                    user_id: r.try_get("user_id")?,
                    score: r.try_get("score")?,
                    num_scores: r.try_get("num_scores")?,
                    reached_at: r.try_get("reached_at")?,
                    seq: r.try_get("seq")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let index = Arc::new(RwLock::new(PeriodIndex::from_entries(
            def.def.sort_order,
            entries,
        )));
        if cacheable {
            let mut periods = board.periods.lock().expect("lock");
            // Older periods fall out of the cache as time rolls over.
            periods.retain(|p, _| *p == current || Some(*p) == previous);
            return Ok(periods.entry(period).or_insert(index).clone());
        }
        Ok(index)
    }

    /// Applies one submission for `user_id` (already authorized) and returns the entry.
    pub async fn apply(
        &self,
        board: &Board,
        user_id: &str,
        score: i64,
        metadata: Option<&Value>,
        now_ms: i64,
    ) -> ApiResult<Applied> {
        let metadata_text = match metadata {
            Some(m) if !m.is_object() => {
                return Err(ApiError::invalid("metadata must be a JSON object"))
            }
            Some(m) => {
                let text = m.to_string();
                if text.len() > MAX_METADATA_BYTES {
                    return Err(ApiError::invalid(format!(
                        "metadata must be at most {MAX_METADATA_BYTES} bytes as JSON"
                    )));
                }
                Some(text)
            }
            None => None,
        };
        let gate = board.write_gate.lock().await;
        let def = board.def();
        let d = &def.def;
        def.check_score(score)?;
        let period = def.schedule.period_start(now_ms);
        let index = self.index_for(board, period, now_ms).await?;
        // Alone, this node's index is the truth and the gate orders the writes. In a cluster the
        // board's row lock orders them across nodes, and the entry and `seq` come from SQL.
        let mut shared = match &self.cluster {
            Some(_) => {
                let mut tx = self.db.write.begin().await?;
                sqlx::query(&format!(
                    "SELECT id FROM lb_boards WHERE project_id = $1 AND id = $2{}",
                    self.db.lock_rows()
                ))
                .bind(&board.project_id)
                .bind(&d.id)
                .fetch_optional(&mut *tx)
                .await?;
                Some(tx)
            }
            None => None,
        };
        let existing = match &mut shared {
            Some(tx) => stored_entry(tx, board, &d.id, d.sort_order, period, user_id).await?,
            None => index
                .read()
                .expect("lock")
                .get(user_id)
                .map(|s| (s.score, s.num_scores, s.reached_at, s.key)),
        };
        let (new_score, changed) = match (existing, d.operator) {
            (None, _) => (score, true),
            (Some((old, ..)), ScoreOperator::Best) => {
                let better = match d.sort_order {
                    SortOrder::Desc => score > old,
                    SortOrder::Asc => score < old,
                };
                if better {
                    (score, true)
                } else {
                    (old, false)
                }
            }
            (Some(_), ScoreOperator::Latest) => (score, true),
            (Some((old, ..)), ScoreOperator::Increment | ScoreOperator::Sum) => {
                let total = old.checked_add(score).ok_or_else(|| {
                    ApiError::conflict("the score would overflow a 64-bit integer")
                })?;
                (total, total != old)
            }
        };
        let num_scores = existing.map_or(0, |e| e.1) + 1;
        let (reached_at, seq) = if changed {
            let seq = match &mut shared {
                Some(tx) => next_stored_seq(tx, &board.project_id, &d.id, period).await?,
                None => index.write().expect("lock").take_seq(),
            };
            (now_ms, seq)
        } else {
            let (_, _, reached, key) = existing.expect("unchanged implies existing");
            (reached, key.seq())
        };
        // Metadata follows the score: an unimproved `best` submission leaves it as it was.
        let new_metadata = if changed { metadata_text } else { None };
        let mut pooled = match shared {
            Some(_) => None,
            None => Some(self.db.write.acquire().await?),
        };
        let conn: &mut AnyConnection = match (&mut shared, &mut pooled) {
            (Some(tx), _) => tx,
            (None, Some(pooled)) => pooled,
            (None, None) => unreachable!("one of the two is set above"),
        };
        if existing.is_none() {
            sqlx::query(
                "INSERT INTO lb_entries (project_id, board_id, period, user_id, score, num_scores, metadata, reached_at, seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&board.project_id)
            .bind(&d.id)
            .bind(period)
            .bind(user_id)
            .bind(new_score)
            .bind(num_scores)
            .bind(new_metadata.as_deref().unwrap_or("{}"))
            .bind(reached_at)
            .bind(seq)
            .execute(&mut *conn)
            .await?;
        } else {
            sqlx::query(
                "UPDATE lb_entries SET score = $1, num_scores = $2, metadata = COALESCE($3, metadata), reached_at = $4, seq = $5 \
                 WHERE project_id = $6 AND board_id = $7 AND period = $8 AND user_id = $9",
            )
            .bind(new_score)
            .bind(num_scores)
            .bind(new_metadata)
            .bind(reached_at)
            .bind(seq)
            .bind(&board.project_id)
            .bind(&d.id)
            .bind(period)
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        }
        drop(pooled);
        if let Some(tx) = shared {
            tx.commit().await?;
        }
        let rank = upsert_newest(&index, user_id, new_score, num_scores, reached_at, seq);
        drop(gate);
        if let Some(cluster) = &self.cluster {
            cluster.leaderboard_entry(EntryChange {
                project_id: board.project_id.clone(),
                board_id: d.id.clone(),
                period,
                user_id: user_id.to_owned(),
                score: new_score,
                num_scores,
                reached_at,
                seq,
            });
        }
        let details = self.details(board, period, &[user_id]).await?;
        let ranked = Ranked {
            rank,
            slot: board::Slot {
                user_id: user_id.into(),
                score: new_score,
                num_scores,
                reached_at,
                key: board::RankKey::new(d.sort_order, new_score, reached_at, seq),
            },
        };
        Ok(Applied {
            period,
            entry: to_entry(ranked, &details),
        })
    }

    /// Resolves `sel` to a period start and that period's index.
    pub async fn read_index(
        &self,
        board: &Board,
        sel: PeriodSel,
        now_ms: i64,
    ) -> ApiResult<(i64, SharedIndex)> {
        let def = board.def();
        let current = def.schedule.period_start(now_ms);
        let period = match sel {
            PeriodSel::Current => current,
            PeriodSel::Previous => def.schedule.previous_start(current).ok_or_else(|| {
                ApiError::not_found("this leaderboard never resets, so it has no previous period")
            })?,
            PeriodSel::Start(p) => p,
        };
        Ok((period, self.index_for(board, period, now_ms).await?))
    }

    /// Entries with their usernames and metadata from SQL.
    pub async fn entries(
        &self,
        board: &Board,
        period: i64,
        ranked: Vec<Ranked>,
    ) -> ApiResult<Vec<LeaderboardEntry>> {
        let ids: Vec<&str> = ranked.iter().map(|r| &*r.slot.user_id).collect();
        let details = self.details(board, period, &ids).await?;
        Ok(ranked.into_iter().map(|r| to_entry(r, &details)).collect())
    }

    async fn details(
        &self,
        board: &Board,
        period: i64,
        user_ids: &[&str],
    ) -> ApiResult<HashMap<String, Details>> {
        let mut out = HashMap::with_capacity(user_ids.len());
        if user_ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT e.user_id, e.metadata, u.username FROM lb_entries e JOIN users u ON u.id = e.user_id \
             WHERE e.project_id = $1 AND e.board_id = $2 AND e.period = $3 AND e.user_id IN ({})",
            super::placeholders(4, user_ids.len())
        );
        let board_id = board.def().def.id.clone();
        let mut query = sqlx::query(&sql)
            .bind(&board.project_id)
            .bind(board_id)
            .bind(period);
        for id in user_ids {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&self.db.read).await? {
            let metadata: String = row.try_get("metadata")?;
            out.insert(
                row.try_get("user_id")?,
                Details {
                    username: row.try_get("username")?,
                    metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                },
            );
        }
        Ok(out)
    }
}

/// Puts an entry in the index unless the index already holds a later write of it (another
/// node's, arrived first); returns the entry's rank.
fn upsert_newest(
    index: &SharedIndex,
    user_id: &str,
    score: i64,
    num_scores: i64,
    reached_at: i64,
    seq: i64,
) -> u64 {
    let mut index = index.write().expect("lock");
    let newer_held = index.get(user_id).is_some_and(|s| s.key.seq() > seq);
    match index.rank_of(user_id) {
        Some(rank) if newer_held => rank,
        _ => index.upsert(user_id, score, num_scores, reached_at, seq),
    }
}

/// The stored entry (score, num_scores, reached_at, key), read inside the write's transaction.
async fn stored_entry(
    conn: &mut AnyConnection,
    board: &Board,
    board_id: &str,
    sort: SortOrder,
    period: i64,
    user_id: &str,
) -> ApiResult<Option<(i64, i64, i64, board::RankKey)>> {
    let row = sqlx::query(
        "SELECT score, num_scores, reached_at, seq FROM lb_entries WHERE project_id = $1 AND board_id = $2 AND period = $3 AND user_id = $4",
    )
    .bind(&board.project_id)
    .bind(board_id)
    .bind(period)
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| {
        let (score, reached_at, seq): (i64, i64, i64) = (
            r.try_get("score")?,
            r.try_get("reached_at")?,
            r.try_get("seq")?,
        );
        Ok((
            score,
            r.try_get("num_scores")?,
            reached_at,
            board::RankKey::new(sort, score, reached_at, seq),
        ))
    })
    .transpose()
}

/// The period's next write order number over every node (`lb_entries_seq` makes it one index
/// lookup).
async fn next_stored_seq(
    conn: &mut AnyConnection,
    project_id: &str,
    board_id: &str,
    period: i64,
) -> ApiResult<i64> {
    let row = sqlx::query(
        "SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM lb_entries WHERE project_id = $1 AND board_id = $2 AND period = $3",
    )
    .bind(project_id)
    .bind(board_id)
    .bind(period)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get("next")?)
}

fn to_entry(r: Ranked, details: &HashMap<String, Details>) -> LeaderboardEntry {
    let d = details.get(&*r.slot.user_id);
    LeaderboardEntry {
        rank: r.rank,
        user_id: r.slot.user_id.to_string(),
        username: d.map(|d| d.username.clone()).unwrap_or_default(),
        score: r.slot.score,
        num_scores: r.slot.num_scores,
        metadata: d
            .map(|d| d.metadata.clone())
            .unwrap_or_else(|| Value::Object(Default::default())),
        updated_at: r.slot.reached_at,
    }
}

fn sort_name(s: SortOrder) -> &'static str {
    match s {
        SortOrder::Desc => "desc",
        SortOrder::Asc => "asc",
    }
}

fn parse_sort(s: &str) -> SortOrder {
    if s == "asc" {
        SortOrder::Asc
    } else {
        SortOrder::Desc
    }
}

fn operator_name(o: ScoreOperator) -> &'static str {
    match o {
        ScoreOperator::Best => "best",
        ScoreOperator::Latest => "latest",
        ScoreOperator::Increment => "increment",
        ScoreOperator::Sum => "sum",
    }
}

fn parse_operator(s: &str) -> ScoreOperator {
    match s {
        "latest" => ScoreOperator::Latest,
        "increment" => ScoreOperator::Increment,
        "sum" => ScoreOperator::Sum,
        _ => ScoreOperator::Best,
    }
}
