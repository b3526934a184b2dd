extends Control
## A tiny two-player match over Godot's high-level multiplayer: `multiplayer.multiplayer_peer` is
## an AeThexMultiplayerPeer relaying through the room, the host (peer 1) spawns one avatar per
## peer with a MultiplayerSpawner, and each avatar's MultiplayerSynchronizer replicates the
## position its owner moves with the arrow keys. `@rpc` carries the "wave" of the Wave button.
## Voice: a toggle turns AeThexCloud.multiplayer.voice on (microphone included), "Mute others"
## mutes every other member, and the speaking label shows who is talking.

## Emitted when the match ends for this player (left, or the host went away).
signal finished

const AVATAR := preload("res://screens/arena_avatar.tscn")

## The room's AeThexMultiplayerPeer (from AeThexCloud.multiplayer.create_peer), set by the
## lobby before the arena enters the tree. Untyped, so the editor parses this script even before
## the extension has registered its classes.
var peer = null

var _voice_toggle := CheckButton.new()
var _mute_toggle := CheckButton.new()
var _speaking_label := Label.new()
var _speaking := {}

@onready var _avatars: Node2D = %Avatars
@onready var _info_label: Label = %InfoLabel


func _ready() -> void:
	%LeaveButton.pressed.connect(_leave)
	%WaveButton.pressed.connect(_on_wave_pressed)
	_add_voice_controls()
	multiplayer.peer_connected.connect(_on_peer_connected)
	multiplayer.peer_disconnected.connect(_on_peer_disconnected)
	multiplayer.server_disconnected.connect(_on_server_disconnected)
	if peer == null:
		# create_peer printed why (e.g. the room was left meanwhile).
		_info_label.text = "Not in the room any more."
		return
	multiplayer.multiplayer_peer = peer
	if multiplayer.is_server():
		_spawn_avatar(multiplayer.get_unique_id())
	_info_label.text = (
		"You are peer %d%s. Arrow keys move your square."
		% [multiplayer.get_unique_id(), " (host)" if multiplayer.is_server() else ""]
	)


func _exit_tree() -> void:
	multiplayer.multiplayer_peer = OfflineMultiplayerPeer.new()
	AeThexCloud.multiplayer.voice.enable(false)
	AeThexCloud.multiplayer.voice.stop_microphone()


func _add_voice_controls() -> void:
	var bar: Node = _info_label.get_parent()
	_voice_toggle.text = "Voice"
	_voice_toggle.toggled.connect(_on_voice_toggled)
	bar.add_child(_voice_toggle)
	_mute_toggle.text = "Mute others"
	_mute_toggle.toggled.connect(_on_mute_toggled)
	bar.add_child(_mute_toggle)
	bar.add_child(_speaking_label)
	AeThexCloud.multiplayer.voice.player_speaking.connect(_on_player_speaking)


func _on_voice_toggled(on: bool) -> void:
	if on:
		# Needs audio/driver/enable_input (set in project.godot).
		AeThexCloud.multiplayer.voice.start_microphone()
	else:
		AeThexCloud.multiplayer.voice.stop_microphone()
	AeThexCloud.multiplayer.voice.enable(on)


func _on_mute_toggled(muted: bool) -> void:
	var room = AeThexCloud.multiplayer.get_room(AeThexCloud.multiplayer.get_current_room())
	var user = AeThexCloud.auth.get_current_user()
	if not room is Dictionary or not user is Dictionary:
		return
	var me: String = user.id
	for member in room.members:
		if member.user_id != me:
			AeThexCloud.multiplayer.voice.mute_player(member.user_id, muted)


func _on_player_speaking(player_id: String, speaking: bool) -> void:
	if speaking:
		_speaking[player_id] = true
	else:
		_speaking.erase(player_id)
	var names := PackedStringArray()
	for id in _speaking:
		names.append(id.right(6))
	_speaking_label.text = "Speaking: %s" % ", ".join(names) if not names.is_empty() else ""


func _on_peer_connected(peer_id: int) -> void:
	# Only the host spawns; the MultiplayerSpawner replicates avatars to everyone else.
	if multiplayer.is_server():
		_spawn_avatar(peer_id)


func _on_peer_disconnected(peer_id: int) -> void:
	if multiplayer.is_server():
		var avatar := _avatars.get_node_or_null(str(peer_id))
		if avatar != null:
			avatar.queue_free()


func _on_server_disconnected() -> void:
	_info_label.text = "The host left the match."
	_leave()


func _spawn_avatar(peer_id: int) -> void:
	if _avatars.has_node(str(peer_id)):
		return
	var avatar := AVATAR.instantiate()
	# The name carries the owner: the avatar gives itself to that peer in _enter_tree.
	avatar.name = str(peer_id)
	avatar.position = Vector2(120 + 160 * _avatars.get_child_count(), 200)
	_avatars.add_child(avatar, true)


func _on_wave_pressed() -> void:
	wave.rpc(multiplayer.get_unique_id())


@rpc("any_peer", "call_local", "reliable")
func wave(from_peer: int) -> void:
	_info_label.text = "Peer %d waves." % from_peer


## The host ends the match for everyone when it leaves the arena.
@rpc("authority", "call_remote", "reliable")
func end_match() -> void:
	_info_label.text = "The host ended the match."
	finished.emit()


func _leave() -> void:
	if multiplayer.has_multiplayer_peer() and multiplayer.is_server():
		end_match.rpc()
	finished.emit()
