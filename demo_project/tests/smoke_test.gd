extends SceneTree
## End-to-end check of the addon against a running server, for machines that have Godot 4.3+:
##
##   godot --headless --path demo_project --script res://tests/smoke_test.gd
##
## Needs aethex_cloud/api_url and aethex_cloud/client_key pointing at a running server. Signs in
## as a fresh device, saves a Dictionary holding Godot types, loads it back, lists and reads the
## history, then exits with status 0 when every check passed and 1 otherwise. Not part of
## scripts/test: CI has no Godot executable.

var _failures := 0


func _initialize() -> void:
	_run.call_deferred()


func _run() -> void:
	var cloud = Engine.get_singleton("AeThexCloud")
	var device_id := "smoke-%d" % Time.get_ticks_usec()
	var login = await cloud.auth.login_device(device_id)
	_check(login.success, "login_device: %s" % str(login.error))
	_check(cloud.auth.is_logged_in(), "is_logged_in after login")

	var state := {
		"level": 5,
		"ratio": 0.5,
		"position": Vector3(10, 0, 20),
		"cell": Vector2i(3, -4),
		"tint": Color(0.25, 0.5, 1, 1),
		"path": NodePath("World/Player"),
		"name": &"hero",
		"xform": Transform3D(Basis.from_euler(Vector3(0.1, 0.2, 0.3)), Vector3(1, 2, 3)),
		"bytes": PackedByteArray([0, 1, 255]),
		"points": PackedVector2Array([Vector2(1, 2), Vector2(3, 4)]),
		"nested": [{"id": 1}, [2, 3.0]],
	}
	var saved = await cloud.saves.save("smoke", state)
	_check(saved.success, "save: %s" % str(saved.error))

	var loaded = await cloud.saves.load("smoke")
	_check(loaded.success, "load: %s" % str(loaded.error))
	if loaded.success:
		for key in state:
			var expected = state[key]
			var actual = loaded.data.get(key)
			_check(
				typeof(actual) == typeof(expected),
				"type of %s: %s" % [key, type_string(typeof(actual))]
			)
			_check(actual == expected, "value of %s: %s != %s" % [key, actual, expected])

	var listed = await cloud.saves.list()
	_check(listed.success, "list: %s" % str(listed.error))
	var names := []
	for s in listed:
		names.append(s.name)
	_check(names.has("smoke"), "list contains the slot: %s" % str(names))

	var history = await cloud.saves.history("smoke")
	_check(history.success and history.size() >= 1, "history: %s" % str(history.error))

	var refused = await cloud.saves.save("smoke", {"node": self})
	_check(not refused.success and refused.error.code == "invalid_request", "objects are refused")

	print("smoke test: %s" % ("passed" if _failures == 0 else "%d failures" % _failures))
	quit(0 if _failures == 0 else 1)


func _check(ok: bool, what: String) -> void:
	if not ok:
		_failures += 1
		printerr("FAILED: ", what)
