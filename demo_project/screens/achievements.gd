extends HBoxContainer
## Achievements screen: lists every achievement with progress and global unlock rates, unlocks
## one, advances a progress-based one, and bumps a statistic that drives another, through
## AeThexCloud.social.achievements and AeThexCloud.social.stats. achievement_unlocked shows a
## banner exactly once per unlock. scripts/demo-social-setup defines the demo achievements.

const KILL_GOAL_ID := "kill_100_enemies"

var _kills := 0

# By name, not as the global `AeThexCloud`: on a project's first open the Godot 4.3 editor parses
# scripts before the extension has registered the singleton ("Identifier not found").
var _cloud = Engine.get_singleton("AeThexCloud")

@onready var _achievement_list: ItemList = %AchievementList
@onready var _summary_label: Label = %SummaryLabel
@onready var _kills_label: Label = %KillsLabel
@onready var _stats_label: Label = %StatsLabel
@onready var _banner_label: Label = %BannerLabel
@onready var _status_label: Label = %StatusLabel


func _ready() -> void:
	%RefreshButton.pressed.connect(_refresh)
	%UnlockButton.pressed.connect(_on_unlock_pressed)
	%KillButton.pressed.connect(_on_kill_pressed)
	%StatButton.pressed.connect(_on_stat_pressed)
	_cloud.social.achievements.achievement_unlocked.connect(_on_achievement_unlocked)
	_banner_label.text = ""
	_refresh()


func _on_unlock_pressed() -> void:
	var result = await _cloud.social.achievements.unlock("first_kill")
	if not result.success:
		_show_error("Unlock failed", result.error)
		return
	if result.newly_unlocked.is_empty():
		_status_label.text = "%s was already unlocked." % result.achievement.name
	_refresh()


func _on_kill_pressed() -> void:
	# Progress never goes down on the server, so sending the running count is safe to repeat.
	_kills += 15
	var result = await _cloud.social.achievements.set_progress(KILL_GOAL_ID, _kills)
	if not result.success:
		_show_error("Progress failed", result.error)
		return
	_kills = int(result.achievement.progress)
	_kills_label.text = "%d / %d enemies" % [_kills, result.achievement.goal]
	_refresh()


func _on_stat_pressed() -> void:
	# Statistics feed achievements tied to them (and leaderboards fed by them) on the server.
	var result = await _cloud.social.stats.increment("enemies_killed", 25)
	if not result.success:
		_show_error("Stat update failed", result.error)
		return
	_stats_label.text = "enemies_killed = %d" % result.values.get("enemies_killed", 0)
	_refresh()


func _on_achievement_unlocked(achievement: Dictionary) -> void:
	_banner_label.text = "Achievement unlocked: %s" % achievement.get("name", achievement.get("id"))


func _refresh() -> void:
	var achievements = await _cloud.social.achievements.get_all()
	if not achievements.success:
		_show_error("Listing failed", achievements.error)
		return
	var rates := {}
	var percentages = await _cloud.social.achievements.get_percentages()
	if percentages.success:
		for rate in percentages:
			rates[rate.id] = rate.percent
	_achievement_list.clear()
	var unlocked_count := 0
	for ach in achievements:
		var state := "unlocked %s" % _time(ach.unlocked_at) if ach.unlocked else "locked"
		if not ach.unlocked and ach.goal > 1:
			state = "%d / %d" % [ach.progress, ach.goal]
		var line := "%s  -  %s  [%s]" % [ach.name, ach.description, state]
		if rates.has(ach.id):
			line += "  %.0f%% of players" % rates[ach.id]
		var index := _achievement_list.add_item(line)
		if ach.unlocked:
			unlocked_count += 1
			_achievement_list.set_item_custom_fg_color(index, Color(0.5, 0.95, 0.55))
		if ach.id == KILL_GOAL_ID:
			_kills = int(ach.progress)
			_kills_label.text = "%d / %d enemies" % [ach.progress, ach.goal]
	_summary_label.text = "%d of %d unlocked" % [unlocked_count, achievements.size()]
	var stats = await _cloud.social.stats.get()
	if stats.success:
		_stats_label.text = "enemies_killed = %d" % stats.values.get("enemies_killed", 0)


## Server times are unix milliseconds.
func _time(value: Variant) -> String:
	if value is int or value is float:
		return Time.get_datetime_string_from_unix_time(int(value / 1000), true)
	return ""


func _show_error(what: String, error: Dictionary) -> void:
	var hint := ""
	if error.get("code", "") == "not_found":
		hint = " Run scripts/demo-social-setup to define the demo achievements."
	_status_label.text = (
		"%s: %s (%s).%s" % [what, error.get("message", ""), error.get("code", ""), hint]
	)
