extends HBoxContainer
## Multiplayer lobby: quick match through AeThexCloud.multiplayer.matchmaking, the public room
## list, creating a room (public or private with a join code), joining by code, the room's members
## and a chat box on the room's channel (AeThexCloud.social.chat). The host starts a match: every
## member then opens the arena, a two-player scene synchronized over
## AeThexCloud.multiplayer.create_peer().

const ARENA := preload("res://screens/arena.tscn")
const MODES := ["deathmatch", "coop"]
const REGIONS := ["us-east", "eu-west"]
## What the host sends with send_state() so everyone opens the arena together.
const START_MATCH := "start_match"

var _room := {}
var _room_ids: Array[String] = []
var _ticket_id := ""
var _arena: Node = null
## The room's AeThexMultiplayerPeer, made as soon as the room is joined: packets that arrive
## before the arena opens wait in it, so the host's spawns are not lost on a slower member.
var _peer = null
var _chat_lines := []

# By name, not as the global `AeThexCloud`: on a project's first open the Godot 4.3 editor parses
# scripts before the extension has registered the singleton ("Identifier not found").
var _cloud = Engine.get_singleton("AeThexCloud")

@onready var _lobby: Control = %LobbyPanel
@onready var _mode_option: OptionButton = %ModeOption
@onready var _region_option: OptionButton = %RegionOption
@onready var _queue_button: Button = %QueueButton
@onready var _cancel_queue_button: Button = %CancelQueueButton
@onready var _label_edit: LineEdit = %LabelEdit
@onready var _room_list: ItemList = %RoomList
@onready var _private_check: CheckBox = %PrivateCheck
@onready var _max_players_spin: SpinBox = %MaxPlayersSpin
@onready var _code_edit: LineEdit = %CodeEdit
@onready var _room_panel: Control = %RoomPanel
@onready var _room_label: Label = %RoomLabel
@onready var _member_list: ItemList = %MemberList
@onready var _start_button: Button = %StartButton
@onready var _chat_log: RichTextLabel = %ChatLog
@onready var _chat_edit: LineEdit = %ChatEdit
@onready var _connection_label: Label = %ConnectionLabel
@onready var _status_label: Label = %StatusLabel


func _ready() -> void:
	for mode in MODES:
		_mode_option.add_item(mode)
	for region in REGIONS:
		_region_option.add_item(region)
	_queue_button.pressed.connect(_on_queue_pressed)
	_cancel_queue_button.pressed.connect(_on_cancel_queue_pressed)
	%RefreshButton.pressed.connect(_refresh_rooms)
	_label_edit.text_submitted.connect(_refresh_rooms.unbind(1))
	%JoinSelectedButton.pressed.connect(_on_join_selected_pressed)
	_room_list.item_activated.connect(_join_listed)
	%CreateButton.pressed.connect(_on_create_pressed)
	%JoinCodeButton.pressed.connect(_on_join_code_pressed)
	%LeaveButton.pressed.connect(_on_leave_pressed)
	_start_button.pressed.connect(_on_start_pressed)
	_chat_edit.text_submitted.connect(_on_chat_submitted)

	var mp = _cloud.multiplayer
	mp.room_joined.connect(_on_room_joined)
	mp.room_left.connect(_on_room_left)
	mp.player_joined.connect(_on_player_joined)
	mp.player_left.connect(_on_player_left)
	mp.host_changed.connect(_on_host_changed)
	mp.player_state_received.connect(_on_player_state_received)
	mp.connection_state_changed.connect(_on_connection_state_changed)
	mp.matchmaking.match_found.connect(_on_match_found)
	mp.matchmaking.matchmaking_timeout.connect(_on_matchmaking_timeout)
	_cloud.social.chat.message_received.connect(_on_message_received)

	_on_connection_state_changed(mp.get_connection_state())
	_set_queued(false)
	_show_room({})
	_refresh_rooms()


func _exit_tree() -> void:
	# The socket belongs to the SDK client and outlives this screen; the room and the queue do not.
	if not _ticket_id.is_empty():
		_cloud.multiplayer.matchmaking.leave_queue()
	if not _room.is_empty():
		_cloud.multiplayer.leave_room(_room.room_id)


# --- Quick match -------------------------------------------------------------------------------


func _on_queue_pressed() -> void:
	var request := {
		"mode": MODES[_mode_option.selected],
		"region": REGIONS[_region_option.selected],
		"skill_range": [1000, 1500],
	}
	_set_queued(true)
	_status_label.text = "Looking for a %s match in %s..." % [request.mode, request.region]
	var queued = await _cloud.multiplayer.matchmaking.join_queue(request)
	if not queued.success:
		_set_queued(false)
		_show_error("Matchmaking failed", queued.error)
	elif _queue_button.disabled:
		# Still waiting (a quick match_found may have ended the wait already).
		_ticket_id = queued.ticket.ticket_id


func _on_cancel_queue_pressed() -> void:
	var left = await _cloud.multiplayer.matchmaking.leave_queue()
	_set_queued(false)
	_status_label.text = "Left the queue." if left.success else left.error.message


func _on_match_found(match_info: Dictionary) -> void:
	_set_queued(false)
	_status_label.text = "Match found with %d players: joining..." % match_info.players.size()
	# The seat is held for every matched player; joining takes it.
	var joined = await _cloud.multiplayer.join_room(match_info.room_id)
	if not joined.success:
		_show_error("Could not join the match", joined.error)


func _on_matchmaking_timeout(_ticket: String) -> void:
	_set_queued(false)
	_status_label.text = "No match found in time. Try again, or create a room."


func _set_queued(queued: bool) -> void:
	if not queued:
		_ticket_id = ""
	_queue_button.disabled = queued
	_cancel_queue_button.disabled = not queued


# --- Rooms -------------------------------------------------------------------------------------


func _refresh_rooms() -> void:
	var label := _label_edit.text.strip_edges()
	var listed = await _cloud.multiplayer.list_rooms(label)
	if not listed.success:
		_show_error("Room list failed", listed.error)
		return
	_room_list.clear()
	_room_ids.clear()
	for room in listed:
		var metadata = room.get("metadata")
		var map := str(metadata.get("map", "?")) if metadata is Dictionary else "?"
		_room_list.add_item(
			(
				"%s  map %s  %d/%d  %s"
				% [
					room.room_id.left(8),
					map,
					room.players,
					room.max_players,
					", ".join(room.labels)
				]
			)
		)
		_room_ids.append(room.room_id)
	_status_label.text = "%d open rooms." % _room_ids.size()


func _on_join_selected_pressed() -> void:
	var selected := _room_list.get_selected_items()
	if selected.is_empty():
		_status_label.text = "Pick a room first."
		return
	_join_listed(selected[0])


func _join_listed(index: int) -> void:
	var joined = await _cloud.multiplayer.join_room(_room_ids[index])
	if not joined.success:
		_show_error("Join failed", joined.error)


func _on_create_pressed() -> void:
	var properties := {
		"metadata": {"map": "arena"},
		"max_players": int(_max_players_spin.value),
		"private": _private_check.button_pressed,
		"labels": ["demo"],
	}
	var created = await _cloud.multiplayer.create_room(properties)
	if not created.success:
		_show_error("Create failed", created.error)


func _on_join_code_pressed() -> void:
	var code := _code_edit.text.strip_edges()
	if code.is_empty():
		_status_label.text = "Enter the six-character join code."
		return
	# join_room takes a room id or a six-character join code.
	var joined = await _cloud.multiplayer.join_room(code)
	if not joined.success:
		_show_error("Join failed", joined.error)


func _on_leave_pressed() -> void:
	if _room.is_empty():
		return
	var left = await _cloud.multiplayer.leave_room(_room.room_id)
	if not left.success:
		_show_error("Leave failed", left.error)


func _on_room_joined(room: Dictionary) -> void:
	_peer = _cloud.multiplayer.create_peer(room.room_id)
	_show_room(room)
	_chat_lines.clear()
	_chat_log.clear()
	_status_label.text = "Joined the room."
	var history = await _cloud.social.chat.history(_channel(), "", 20)
	if history.success and not _room.is_empty() and _room.room_id == room.room_id:
		# Newest first: shown oldest first, above what arrived meanwhile.
		var earlier := []
		for message in history:
			earlier.push_front(_chat_line(message))
		_chat_lines = earlier + _chat_lines
		_chat_log.clear()
		for line in _chat_lines:
			_chat_log.append_text(line + "\n")


func _on_room_left(room_id: String) -> void:
	if not _room.is_empty() and room_id == _room.room_id:
		_peer = null
		_show_room({})
		_close_arena()
		_refresh_rooms()


func _on_player_joined(room_id: String, _member: Dictionary) -> void:
	_reload_room(room_id)


func _on_player_left(room_id: String, _user_id: String) -> void:
	_reload_room(room_id)


func _on_host_changed(room_id: String, host: String) -> void:
	if _room.is_empty() or room_id != _room.room_id:
		return
	# The old peer closed (peer 1 left); in a new one the new host is peer 1. An open arena
	# ends through server_disconnected and gets the new peer when it closes.
	if _arena == null:
		_peer = _cloud.multiplayer.create_peer(room_id)
	_reload_room(room_id)
	_status_label.text = "The host left; %s hosts now." % _short(host)


## Shows the SDK's view of the room, which membership events keep current.
func _reload_room(room_id: String) -> void:
	if _room.is_empty() or room_id != _room.room_id:
		return
	var room = _cloud.multiplayer.get_room(room_id)
	if room is Dictionary:
		_show_room(room)


func _on_start_pressed() -> void:
	_cloud.multiplayer.send_state_to_room(_room.room_id, {START_MATCH: true})
	_open_arena()


func _on_player_state_received(_player_id: String, state) -> void:
	if state is Dictionary and state.get(START_MATCH, false):
		_open_arena()


func _show_room(room: Dictionary) -> void:
	_room = room
	_lobby.visible = room.is_empty() and _arena == null
	_room_panel.visible = not room.is_empty() and _arena == null
	if room.is_empty():
		return
	var me := _my_user_id()
	var code := str(room.get("join_code", ""))
	_room_label.text = (
		"Room %s%s"
		% [room.room_id.left(8), "   join code: %s" % code if not code.is_empty() else ""]
	)
	_member_list.clear()
	for member in room.members:
		var tags := []
		if member.user_id == room.host:
			tags.append("host")
		if member.user_id == me:
			tags.append("you")
		_member_list.add_item("%s %s" % [_short(member.user_id), " ".join(tags)])
	_start_button.disabled = room.host != me or room.members.size() < 2


# --- The arena ---------------------------------------------------------------------------------


func _open_arena() -> void:
	if _arena != null or _room.is_empty():
		return
	_arena = ARENA.instantiate()
	_arena.peer = _peer
	_arena.finished.connect(_close_arena, CONNECT_DEFERRED)
	_lobby.visible = false
	_room_panel.visible = false
	add_child(_arena)


func _close_arena() -> void:
	if _arena == null:
		return
	# Out of the tree at once, so a next match's arena gets the same node path on every peer.
	remove_child(_arena)
	_arena.queue_free()
	_arena = null
	# A peer serves one match: Godot's multiplayer starts afresh with the next one.
	if not _room.is_empty():
		_peer = _cloud.multiplayer.create_peer(_room.room_id)
	_show_room(_room)


# --- Chat --------------------------------------------------------------------------------------


func _on_chat_submitted(text: String) -> void:
	text = text.strip_edges()
	if text.is_empty() or _room.is_empty():
		return
	_chat_edit.clear()
	var sent = await _cloud.social.chat.send(_channel(), text)
	if sent.success:
		# What the others see, after the server's filter.
		_add_chat_line(_chat_line(sent.message))
	else:
		_show_error("Chat", sent.error)


func _on_message_received(message: Dictionary) -> void:
	if not _room.is_empty() and message.channel == _channel():
		_add_chat_line(_chat_line(message))


func _add_chat_line(line: String) -> void:
	_chat_lines.append(line)
	_chat_log.append_text(line + "\n")


func _channel() -> String:
	return "room:%s" % _room.room_id


func _chat_line(message: Dictionary) -> String:
	# [lb] escapes BBCode a player typed.
	return "[b]%s[/b]: %s" % [_short(message.from), str(message.body).replace("[", "[lb]")]


# --- Status ------------------------------------------------------------------------------------


func _on_connection_state_changed(state: String) -> void:
	_connection_label.text = "Realtime: %s" % state


func _my_user_id() -> String:
	var user = _cloud.auth.get_current_user()
	return str(user.get("id", "")) if user is Dictionary else ""


func _short(user_id: String) -> String:
	return user_id.right(6)


func _show_error(what: String, error: Dictionary) -> void:
	_status_label.text = "%s: %s (%s)" % [what, error.get("message", ""), error.get("code", "")]
