//! `AeThexCloud.social`: leaderboards, achievements, statistics, friends and groups, on the SDK's
//! `social` module through the same request/result/signal machinery as `auth` and `saves`.
//!
//! `leaderboards.get(board, options)` and `stats.get()` / `stats.set(name, value)` share their
//! names with `Object.get` / `Object.set`. Godot looks methods up from the most derived class
//! (ClassDB registration only refuses a duplicate within one class; GDScript's analyzer and
//! `Object.callp` both walk the hierarchy from the object's own class), so on these objects a
//! script call reaches the social method, as the issue's GDScript demands. Engine code calls
//! the C++ `Object::get/set` directly and is unaffected; these objects expose no script
//! properties, so nothing is lost.

use std::rc::Rc;

use godot::builtin::{GString, Signal, VarDictionary, Variant};
use godot::classes::RefCounted;
use godot::obj::{Base, Gd};
use godot::register::{godot_api, GodotClass};

use crate::chat::AeThexChat;
use crate::convert;
use crate::hub::{call_with, optional, page_limit, unsupported_argument, Hub};
use crate::sdk::Value;

/// Social features. Reach it as `AeThexCloud.social`: [member leaderboards],
/// [member achievements], [member stats], [member friends], [member groups], [member chat].
///
/// Every method returning a [Signal] is asynchronous; `await` it for an [AeThexResult]. A result
/// whose payload holds a list iterates it, so `for entry in await
/// AeThexCloud.social.leaderboards.get("high_scores", {"limit": 10})` visits the entries.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexSocial {
    /// Leaderboards ([AeThexLeaderboards]).
    #[var(no_set)]
    leaderboards: Gd<AeThexLeaderboards>,
    /// Achievements ([AeThexAchievements]).
    #[var(no_set)]
    achievements: Gd<AeThexAchievements>,
    /// Player statistics ([AeThexStats]).
    #[var(no_set)]
    stats: Gd<AeThexStats>,
    /// Friends and presence ([AeThexFriends]).
    #[var(no_set)]
    friends: Gd<AeThexFriends>,
    /// Groups / clans ([AeThexGroups]).
    #[var(no_set)]
    groups: Gd<AeThexGroups>,
    /// Chat channels: rooms, direct messages, groups ([AeThexChat]).
    #[var(no_set)]
    chat: Gd<AeThexChat>,
    base: Base<RefCounted>,
}

impl AeThexSocial {
    /// Builds `social` and its sub-objects and registers each with the hub under the service
    /// name the SDK's signals use (`social.leaderboards`, ...).
    pub fn create(hub: &Rc<Hub>) -> Gd<AeThexSocial> {
        let leaderboards = Gd::from_init_fn(|base| AeThexLeaderboards {
            hub: hub.clone(),
            base,
        });
        let achievements = Gd::from_init_fn(|base| AeThexAchievements {
            hub: hub.clone(),
            base,
        });
        let stats = Gd::from_init_fn(|base| AeThexStats {
            hub: hub.clone(),
            base,
        });
        let friends = Gd::from_init_fn(|base| AeThexFriends {
            hub: hub.clone(),
            base,
        });
        let groups = Gd::from_init_fn(|base| AeThexGroups {
            hub: hub.clone(),
            base,
        });
        let chat = AeThexChat::create(hub);
        let social = Gd::from_init_fn(|base| AeThexSocial {
            leaderboards: leaderboards.clone(),
            achievements: achievements.clone(),
            stats: stats.clone(),
            friends: friends.clone(),
            groups: groups.clone(),
            chat,
            base,
        });
        hub.add_service("social", social.clone().upcast());
        hub.add_service("social.leaderboards", leaderboards.clone().upcast());
        hub.add_service("social.achievements", achievements.clone().upcast());
        hub.add_service("social.stats", stats.clone().upcast());
        hub.add_service("social.friends", friends.clone().upcast());
        hub.add_service("social.groups", groups.upcast());
        social
    }
}

// ---------------------------------------------------------------------------------------------

/// Leaderboards. Reach it as `AeThexCloud.social.leaderboards`.
///
/// Boards are defined on the server (sort order, operator, reset schedule, bounds); see
/// docs/api/social.md. Entries are `{rank, user_id, username, score, num_scores, metadata,
/// updated_at}`; ranks are exact, ties go to whoever reached the score first.
/// ```gdscript
/// AeThexCloud.social.leaderboards.submit_score("high_scores", 1000)
/// var leaderboard = await AeThexCloud.social.leaderboards.get("high_scores", {"range": "global", "limit": 10})
/// for entry in leaderboard:
///     print(entry.rank, entry.username, entry.score)
/// ```
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexLeaderboards {
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexLeaderboards {
    /// A score reached the server; `entry` is the player's entry afterwards (with its rank).
    #[signal]
    fn score_submitted(board: GString, entry: VarDictionary);

    /// Submits `score` (an int: store times in ms) to `board`. Result: `{leaderboard_id, period,
    /// entry}`; emits [signal score_submitted]. Not retried automatically, since on `increment`
    /// and `sum` boards a repeat would count twice.
    #[func]
    fn submit_score(&self, board: GString, score: i64) -> Signal {
        self.hub.call(|c| {
            c.social()
                .leaderboards()
                .submit_score(board.to_string(), score, None)
        })
    }

    /// As [method submit_score], with `metadata` (at most 4 KiB, Godot types kept) stored with
    /// the score and returned in entries (e.g. the car, the replay id).
    #[func]
    fn submit_score_with_metadata(
        &self,
        board: GString,
        score: i64,
        metadata: VarDictionary,
    ) -> Signal {
        call_with(
            &self.hub,
            &Variant::from(metadata),
            "metadata",
            |c, metadata| {
                c.social()
                    .leaderboards()
                    .submit_score(board.to_string(), score, Some(metadata))
            },
        )
    }

    /// Reads a page of `board`. `options`: `range` (`"global"` by default, `"around_me"`: `limit`
    /// entries above and below you, `"friends"`: you and your friends), `limit`, `cursor` (a
    /// previous page's `next_cursor`) and `period` (`"current"`, `"previous"` or a period start).
    /// Result: `{entries, leaderboard_id, period, next_reset_at, total, next_cursor, me}`;
    /// iterating it visits `entries`. Pass `{}` for the defaults (top 10 of the current period).
    /// This two-argument `get` replaces `Object.get` on this object.
    #[func(rename = get)]
    fn get_page(&self, board: GString, options: VarDictionary) -> Signal {
        call_with(
            &self.hub,
            &Variant::from(options),
            "options",
            |c, options| c.social().leaderboards().get(board.to_string(), options),
        )
    }

    /// One player's entry with its exact rank: yours by default, or `user_id`'s. `period` as in
    /// [method get]. Result: the entry; `not_found` without a score in the period.
    #[func]
    fn get_rank(
        &self,
        board: GString,
        #[opt(default = "")] user_id: GString,
        #[opt(default = "")] period: GString,
    ) -> Signal {
        let (user_id, period) = (optional(&user_id), optional(&period));
        self.hub.call(|c| {
            c.social()
                .leaderboards()
                .get_rank(board.to_string(), user_id, period)
        })
    }

    /// The project's boards. Result: `{leaderboards: [{id, sort_order, operator, reset,
    /// min_score, max_score, server_authoritative, stat}]}`.
    #[func]
    fn list(&self) -> Signal {
        self.hub.call(|c| c.social().leaderboards().list())
    }
}

// ---------------------------------------------------------------------------------------------

/// Achievements. Reach it as `AeThexCloud.social.achievements`.
///
/// Achievements are defined on the server (name, description, icon, hidden, goal, optional
/// statistic). An achievement is `{id, name, description, icon_url, hidden, unlocked, progress,
/// goal, unlocked_at}`.
/// ```gdscript
/// AeThexCloud.social.achievements.unlock("first_kill")
/// var achievements = await AeThexCloud.social.achievements.get_all()
/// for ach in achievements:
///     print(ach.name, ach.unlocked, ach.progress)
/// ```
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexAchievements {
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexAchievements {
    /// Emitted once per achievement, when the server reports that a call of this player
    /// ([method unlock], [method set_progress] or a [AeThexStats] update) unlocked it.
    #[signal]
    fn achievement_unlocked(achievement: VarDictionary);

    /// Unlocks `id`. Result: `{achievement, newly_unlocked}`; unlocking again changes nothing.
    #[func]
    fn unlock(&self, id: GString) -> Signal {
        self.hub
            .call(|c| c.social().achievements().unlock(id.to_string()))
    }

    /// Raises the progress of `id` to `progress` (never lowers it; capped at the goal). Reaching
    /// the goal unlocks. Result: `{achievement, newly_unlocked}`. Achievements tied to a
    /// statistic move only with it (`forbidden`).
    #[func]
    fn set_progress(&self, id: GString, progress: i64) -> Signal {
        self.hub.call(|c| {
            c.social()
                .achievements()
                .set_progress(id.to_string(), progress)
        })
    }

    /// Every achievement you can see (hidden ones once unlocked). Result: `{achievements}`;
    /// iterating it visits them.
    #[func]
    fn get_all(&self) -> Signal {
        self.hub.call(|c| c.social().achievements().get_all())
    }

    /// How many players unlocked each achievement. Result: `{achievements: [{id,
    /// unlocked_count, percent}], total_players}`.
    #[func]
    fn get_percentages(&self) -> Signal {
        self.hub
            .call(|c| c.social().achievements().get_percentages())
    }
}

// ---------------------------------------------------------------------------------------------

/// Player statistics: named integers per player. Reach it as `AeThexCloud.social.stats`.
///
/// A change advances achievements tied to the statistic and submits to leaderboards fed by it.
/// Results are `{stats: [{name, value, updated_at}], values: {name: value}, newly_unlocked}`, so
/// `(await AeThexCloud.social.stats.get()).values.enemies_killed` reads one value.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexStats {
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexStats {
    /// Sets statistic `name` to `value`. (This `set` replaces `Object.set` on this object.)
    #[func(rename = set)]
    fn set_stat(&self, name: GString, value: i64) -> Signal {
        self.hub
            .call(|c| c.social().stats().set(name.to_string(), value))
    }

    /// Adds `amount` (default 1, may be negative) to statistic `name`. Not retried
    /// automatically, since a repeat would count twice.
    #[func]
    fn increment(&self, name: GString, #[opt(default = 1)] amount: i64) -> Signal {
        self.hub
            .call(|c| c.social().stats().increment(name.to_string(), amount))
    }

    /// Several changes in one request: `set` and `increment` are Dictionaries name -> int.
    #[func]
    fn update(&self, set: VarDictionary, increment: VarDictionary) -> Signal {
        let (set, increment) = (Variant::from(set), Variant::from(increment));
        let increment = match convert::to_value(&increment, "increment") {
            Ok(value) => value,
            Err(error) => return self.hub.refuse(unsupported_argument(error)),
        };
        call_with(&self.hub, &set, "set", |c, set| {
            c.social().stats().update(set, increment)
        })
    }

    /// Your statistics. (This `get` replaces `Object.get` on this object.)
    #[func(rename = get)]
    fn get_stats(&self) -> Signal {
        self.hub.call(|c| c.social().stats().get())
    }
}

// ---------------------------------------------------------------------------------------------

/// Friends and presence. Reach it as `AeThexCloud.social.friends`.
///
/// Actions answer `{user_id, state}` where `state` is `"friend"`, `"sent"`, `"received"`,
/// `"blocked"` or null (no relationship left), and emit [signal friends_updated]. While the
/// realtime connection is up (see [AeThexMultiplayer]) the server also pushes friends' presence
/// ([signal presence_changed]) and changes others made ([signal friends_updated]).
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexFriends {
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexFriends {
    /// A relationship changed. After one of your calls `status` is `{user_id, state}`; when
    /// the server pushes a change someone else made (a request sent to you, accepted, ...) it
    /// is empty: re-read [method list].
    #[signal]
    fn friends_updated(status: VarDictionary);

    /// A friend's presence changed: `status` is `"online"`, `"in_match"` or `"offline"`, `at`
    /// the time in unix milliseconds. Pushed over the realtime connection.
    #[signal]
    fn presence_changed(user_id: GString, status: GString, at: i64);

    /// Sends a friend request (if they already asked you, you become friends).
    #[func]
    fn send_request(&self, user_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().friends().send_request(user_id.to_string()))
    }

    /// Accepts a request `user_id` sent you.
    #[func]
    fn accept(&self, user_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().friends().accept(user_id.to_string()))
    }

    /// Declines a request `user_id` sent you.
    #[func]
    fn decline(&self, user_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().friends().decline(user_id.to_string()))
    }

    /// Withdraws a request you sent to `user_id`.
    #[func]
    fn cancel(&self, user_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().friends().cancel(user_id.to_string()))
    }

    /// Ends a friendship on both sides.
    #[func]
    fn remove(&self, user_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().friends().remove(user_id.to_string()))
    }

    /// Blocks `user_id`: ends friendship and requests; they cannot send you requests and neither
    /// of you finds the other in [method search].
    #[func]
    fn block(&self, user_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().friends().block(user_id.to_string()))
    }

    #[func]
    fn unblock(&self, user_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().friends().unblock(user_id.to_string()))
    }

    /// Your relationships, optionally only one `state` (`"friend"`, `"sent"`, `"received"`,
    /// `"blocked"`). Result: `{friends: [{user_id, username, state, presence, last_seen,
    /// since}]}` with `presence` `"online"`, `"offline"` or `"in_match"` for friends.
    #[func]
    fn list(&self, #[opt(default = "")] state: GString) -> Signal {
        let state = optional(&state);
        self.hub.call(|c| c.social().friends().list(state))
    }

    /// Players whose username starts with `query` (case-insensitive). Result: `{players:
    /// [{user_id, username}], next_cursor}`; pass `next_cursor` back for the next page.
    #[func]
    fn search(
        &self,
        query: GString,
        #[opt(default = 0)] limit: i64,
        #[opt(default = "")] cursor: GString,
    ) -> Signal {
        let limit = match page_limit(&self.hub, limit) {
            Ok(limit) => limit,
            Err(refused) => return refused,
        };
        let cursor = optional(&cursor);
        self.hub.call(|c| {
            c.social()
                .friends()
                .search(query.to_string(), limit, cursor)
        })
    }

    /// Stamps your presence for friends (call it every ~30 s while playing; `in_match` shows
    /// you as in a match). Result: `{}`.
    #[func]
    fn heartbeat(&self, #[opt(default = false)] in_match: bool) -> Signal {
        self.hub.call(|c| c.social().friends().heartbeat(in_match))
    }
}

// ---------------------------------------------------------------------------------------------

/// Groups (clans, teams) with roles owner > admin > member. Reach it as
/// `AeThexCloud.social.groups`.
///
/// A group is `{id, name, description, open, max_members, member_count, created_at, my_role}`;
/// a member `{user_id, username, role, since}`.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexGroups {
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexGroups {
    /// Creates a group you own. `open` groups take anyone; closed ones take invited players and
    /// accepted requests. Result: the group; `conflict` when the name is taken.
    #[func]
    fn create(
        &self,
        name: GString,
        #[opt(default = "")] description: GString,
        #[opt(default = true)] open: bool,
        #[opt(default = 100)] max_members: i64,
    ) -> Signal {
        let options = Value::dict([
            ("description", Value::String(description.to_string())),
            ("open", Value::Bool(open)),
            ("max_members", Value::Int(max_members)),
        ]);
        self.hub
            .call(|c| c.social().groups().create(name.to_string(), options))
    }

    /// Groups whose name starts with `query` (all when empty). Result: `{groups}`.
    #[func]
    fn search(
        &self,
        #[opt(default = "")] query: GString,
        #[opt(default = 0)] limit: i64,
    ) -> Signal {
        let limit = match page_limit(&self.hub, limit) {
            Ok(limit) => limit,
            Err(refused) => return refused,
        };
        let query = optional(&query);
        self.hub.call(|c| c.social().groups().search(query, limit))
    }

    /// Groups you belong to, are invited to or asked to join. Result: `{groups}`.
    #[func]
    fn list(&self) -> Signal {
        self.hub.call(|c| c.social().groups().list())
    }

    /// One group. Result: the group.
    #[func]
    fn get_group(&self, group_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().groups().get_group(group_id.to_string()))
    }

    /// Members by role (pending invites and requests only for admins). Result: `{members}`.
    #[func]
    fn members(&self, group_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().groups().members(group_id.to_string()))
    }

    /// Joins an open group or accepts an invite; asks to join a closed one (`my_role` is then
    /// `"requested"`). Result: the group.
    #[func]
    fn join(&self, group_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().groups().join(group_id.to_string()))
    }

    /// Leaves (the owner hands ownership over first unless alone). Result: `{}`.
    #[func]
    fn leave(&self, group_id: GString) -> Signal {
        self.hub
            .call(|c| c.social().groups().leave(group_id.to_string()))
    }

    /// Invites `user_id` (admins and the owner). Result: the member.
    #[func]
    fn invite(&self, group_id: GString, user_id: GString) -> Signal {
        self.hub.call(|c| {
            c.social()
                .groups()
                .invite(group_id.to_string(), user_id.to_string())
        })
    }

    /// Accepts `user_id`'s request to join (admins and the owner). Result: the member.
    #[func]
    fn accept_request(&self, group_id: GString, user_id: GString) -> Signal {
        self.hub.call(|c| {
            c.social()
                .groups()
                .accept_request(group_id.to_string(), user_id.to_string())
        })
    }

    /// Removes `user_id`, who must rank below you. Result: the member's last role.
    #[func]
    fn kick(&self, group_id: GString, user_id: GString) -> Signal {
        self.hub.call(|c| {
            c.social()
                .groups()
                .kick(group_id.to_string(), user_id.to_string())
        })
    }

    /// member -> admin (admins and the owner); admin -> owner (owner only, who becomes admin).
    #[func]
    fn promote(&self, group_id: GString, user_id: GString) -> Signal {
        self.hub.call(|c| {
            c.social()
                .groups()
                .promote(group_id.to_string(), user_id.to_string())
        })
    }

    /// admin -> member (owner only).
    #[func]
    fn demote(&self, group_id: GString, user_id: GString) -> Signal {
        self.hub.call(|c| {
            c.social()
                .groups()
                .demote(group_id.to_string(), user_id.to_string())
        })
    }
}
