extends SceneTree
## End-to-end check of AeThexCloud.multiplayer, matchmaking and chat against a running server, for
## machines that have Godot 4.3+. A match needs two players, so start two instances at once:
##
##   godot --headless --path demo_project --script res://tests/multiplayer_smoke_test.gd &
##   godot --headless --path demo_project --script res://tests/multiplayer_smoke_test.gd
##
## Run scripts/demo-multiplayer-setup once against that server (it makes "deathmatch" a
## two-player mode). Each instance signs in as a fresh device and runs the issue's GDScript as
## written: join the "deathmatch" queue, join the room of match_found through
## `match_info.room_id`, send_state with Godot types, receive the other player's state through
## player_state_received with the types intact, run the seed's two voice lines (enable, mute) and
## wait for the voice keys, chat on the room channel, then check that
## create_peer gives a connected MultiplayerPeer whose peer ids follow the room (host = 1). Exits
## with status 0 when every check passed and 1 otherwise. Not part of scripts/test: CI has no
## Godot executable.

const TIMEOUT_MS := 30000

var _failures := 0
var _match_info = null
var _joined_room = null
var _received := []
var _messages := []


func _initialize() -> void:
	_run.call_deferred()


func _run() -> void:
	var cloud = Engine.get_singleton("AeThexCloud")
	var login = await cloud.auth.login_device("mp-smoke-%d" % Time.get_ticks_usec())
	_check(login.success, "login_device: %s" % str(login.error))
	var me: String = login.user.id

	cloud.multiplayer.room_joined.connect(func(room): _joined_room = room)
	cloud.social.chat.message_received.connect(func(message): _messages.append(message))

	# The seed's examples, as written.
	var player := {"position": Vector2(10, 20), "rotation": 0.5, "health": 100}
	cloud.multiplayer.matchmaking.join_queue(
		{"mode": "deathmatch", "region": "us-east", "skill_range": [1000, 1500]}
	)
	cloud.multiplayer.matchmaking.match_found.connect(
		func(match_info): cloud.multiplayer.join_room(match_info.room_id)
	)
	cloud.multiplayer.player_state_received.connect(
		func(player_id, state): _received.append([player_id, state])
	)
	cloud.multiplayer.matchmaking.match_found.connect(func(match_info): _match_info = match_info)

	await _wait_until(func(): return _joined_room != null)
	_check(_match_info != null, "match_found was emitted")
	if _joined_room == null:
		_finish()
		return
	_check(_joined_room.room_id == _match_info.room_id, "joined the matched room")
	_check(_joined_room.members.size() >= 1, "room_joined lists the members")
	# The other player may join a moment later; state sent before that would not reach them.
	await _wait_until(func(): return _member_count(cloud, _joined_room.room_id) >= 2)

	cloud.multiplayer.send_state(
		{"position": player.position, "rotation": player.rotation, "health": player.health}
	)
	await _wait_until(func(): return not _received.is_empty())
	_check(not _received.is_empty(), "player_state_received from the other player")
	if not _received.is_empty():
		var from: String = _received[0][0]
		var state: Dictionary = _received[0][1]
		_check(from != me, "state comes from the other player, never echoed")
		_check(state.position is Vector2, "a Vector2 stays a Vector2: %s" % str(state.position))
		_check(state.position == Vector2(10, 20), "position survives: %s" % str(state.position))
		_check(state.health == 100 and state.rotation == 0.5, "numbers survive: %s" % str(state))

	# The seed's two voice lines, then the other player's voice keys arrive (both enable it).
	if not _received.is_empty():
		var player_id: String = _received[0][0]
		cloud.multiplayer.voice.enable(true)
		cloud.multiplayer.voice.mute_player(player_id, true)
		_check(cloud.multiplayer.voice.is_muted(player_id), "mute_player mutes")
		await _wait_until(
			func(): return cloud.multiplayer.voice.get_state().secure_peers.has(player_id)
		)
		_check(
			cloud.multiplayer.voice.get_state().secure_peers.has(player_id),
			"voice keys agreed with the other player: %s" % str(cloud.multiplayer.voice.get_state())
		)
		cloud.multiplayer.voice.mute_player(player_id, false)

	var channel := "room:%s" % _joined_room.room_id
	var sent = await cloud.social.chat.send(channel, "gg from %s" % me.right(6))
	_check(sent.success, "chat send: %s" % str(sent.error))
	await _wait_until(func(): return not _messages.is_empty())
	_check(not _messages.is_empty(), "message_received from the other player")
	var history = await cloud.social.chat.history(channel)
	_check(history.success and history.size() >= 1, "chat history: %s" % str(history.error))

	var peer = cloud.multiplayer.create_peer(_joined_room.room_id)
	_check(peer is MultiplayerPeer, "create_peer returns a MultiplayerPeer")
	root.multiplayer.multiplayer_peer = peer
	_check(
		peer.get_connection_status() == MultiplayerPeer.CONNECTION_CONNECTED,
		"the peer is connected"
	)
	var host_is_me: bool = _joined_room.host == me
	_check(
		(peer.get_unique_id() == 1) == host_is_me,
		"the host is peer 1: id %d, host %s" % [peer.get_unique_id(), str(host_is_me)]
	)
	await _wait_until(func(): return not root.multiplayer.get_peers().is_empty())
	_check(not root.multiplayer.get_peers().is_empty(), "peer_connected for the other member")
	root.multiplayer.multiplayer_peer = OfflineMultiplayerPeer.new()

	# Stay in the room until the other instance is done with its checks too.
	cloud.multiplayer.send_state({"done": true})
	await _wait_until(func(): return _received.any(func(r): return r[1].get("done", false)))

	var left = await cloud.multiplayer.leave_room(_joined_room.room_id)
	_check(left.success, "leave_room: %s" % str(left.error))
	_finish()


func _member_count(cloud, room_id: String) -> int:
	var room = cloud.multiplayer.get_room(room_id)
	return room.members.size() if room is Dictionary and room.has("members") else 0


## Polls `condition` once per frame until it holds or TIMEOUT_MS passed.
func _wait_until(condition: Callable) -> void:
	var deadline := Time.get_ticks_msec() + TIMEOUT_MS
	while not condition.call() and Time.get_ticks_msec() < deadline:
		await process_frame


func _finish() -> void:
	print(
		"multiplayer smoke test: %s" % ("passed" if _failures == 0 else "%d failures" % _failures)
	)
	quit(0 if _failures == 0 else 1)


func _check(ok: bool, what: String) -> void:
	if not ok:
		_failures += 1
		printerr("FAILED: ", what)
