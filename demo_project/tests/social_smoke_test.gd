extends SceneTree
## End-to-end check of AeThexCloud.social against a running server, for machines that have
## Godot 4.3+. Run scripts/demo-social-setup once against that server, then:
##
##   godot --headless --path demo_project --script res://tests/social_smoke_test.gd
##
## Runs the issue's GDScript as written (submit, get with options, iterate entries, unlock,
## set_progress, get_all, iterate achievements), checks achievement_unlocked fires once, and
## exits with status 0 when every check passed and 1 otherwise. Not part of scripts/test: CI has
## no Godot executable.

var _failures := 0
var _unlocked: Array = []


func _initialize() -> void:
	_run.call_deferred()


func _run() -> void:
	var cloud = Engine.get_singleton("AeThexCloud")
	var login = await cloud.auth.login_device("social-smoke-%d" % Time.get_ticks_usec())
	_check(login.success, "login_device: %s" % str(login.error))
	cloud.social.achievements.achievement_unlocked.connect(_on_unlocked)

	var submitted = await cloud.social.leaderboards.submit_score("high_scores", 1000)
	_check(submitted.success, "submit_score: %s" % str(submitted.error))
	var leaderboard = await cloud.social.leaderboards.get(
		"high_scores", {"range": "global", "limit": 10}
	)
	_check(leaderboard.success, "get: %s" % str(leaderboard.error))
	var seen := 0
	for entry in leaderboard:
		print(entry.rank, entry.username, entry.score)
		seen += 1
	_check(seen >= 1 and seen == leaderboard.entries.size(), "iterating visits the entries")
	var around = await cloud.social.leaderboards.get("high_scores", {"range": "around_me"})
	_check(around.success and around.me.score >= 1000, "around_me: %s" % str(around.error))

	var first = await cloud.social.achievements.unlock("first_kill")
	_check(first.success, "unlock: %s" % str(first.error))
	var again = await cloud.social.achievements.unlock("first_kill")
	_check(again.success and again.newly_unlocked.is_empty(), "second unlock changes nothing")
	var progressed = await cloud.social.achievements.set_progress("kill_100_enemies", 45)
	_check(progressed.success, "set_progress: %s" % str(progressed.error))
	var achievements = await cloud.social.achievements.get_all()
	_check(achievements.success, "get_all: %s" % str(achievements.error))
	var names := []
	for ach in achievements:
		print(ach.name, ach.unlocked, ach.progress)
		names.append(ach.name)
	_check(names.has("First blood"), "get_all lists first_kill: %s" % str(names))
	_check(_unlocked == ["first_kill"], "achievement_unlocked once: %s" % str(_unlocked))

	var stats = await cloud.social.stats.get()
	_check(stats.success and stats.values is Dictionary, "stats.get: %s" % str(stats.error))
	var friends = await cloud.social.friends.list()
	_check(friends.success, "friends.list: %s" % str(friends.error))

	print("social smoke test: %s" % ("passed" if _failures == 0 else "%d failures" % _failures))
	quit(0 if _failures == 0 else 1)


func _on_unlocked(achievement: Dictionary) -> void:
	_unlocked.append(achievement.id)


func _check(ok: bool, what: String) -> void:
	if not ok:
		_failures += 1
		printerr("FAILED: ", what)
