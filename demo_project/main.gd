extends Control
## Demo entry point: resumes the stored session or shows the login screen, then shows the screen
## picked in the top bar. AeThexCloud is the engine singleton of addons/aethex_cloud.

const LoginScreen := preload("res://screens/login.tscn")

## Screens of the top bar, by name.
const SCREENS := {
	"saves": preload("res://screens/saves.tscn"),
	"leaderboards": preload("res://screens/leaderboards.tscn"),
	"achievements": preload("res://screens/achievements.tscn"),
	"multiplayer": preload("res://screens/lobby.tscn"),
}

var _signed_in := false
var _current_screen := ""

# By name, not as the global `AeThexCloud`: on a project's first open the Godot 4.3 editor parses
# scripts before the extension has registered the singleton ("Identifier not found").
var _cloud = Engine.get_singleton("AeThexCloud")

@onready var _screen_holder: Control = %ScreenHolder
@onready var _nav: Control = %Nav
@onready var _saves_button: Button = %SavesButton
@onready var _leaderboards_button: Button = %LeaderboardsButton
@onready var _achievements_button: Button = %AchievementsButton
@onready var _multiplayer_button: Button = %MultiplayerButton
@onready var _sync_label: Label = %SyncLabel
@onready var _account_label: Label = %AccountLabel
@onready var _logout_button: Button = %LogoutButton


func _ready() -> void:
	_cloud.auth.logged_in.connect(_on_logged_in)
	_cloud.auth.logged_out.connect(_on_signed_out)
	_cloud.auth.session_expired.connect(_on_session_expired)
	_cloud.saves.sync_status_changed.connect(_on_sync_status_changed)
	_saves_button.pressed.connect(_show_screen.bind("saves"))
	_leaderboards_button.pressed.connect(_show_screen.bind("leaderboards"))
	_achievements_button.pressed.connect(_show_screen.bind("achievements"))
	_multiplayer_button.pressed.connect(_show_screen.bind("multiplayer"))
	_logout_button.pressed.connect(_on_logout_pressed)
	_on_sync_status_changed(_cloud.saves.get_sync_status())
	_set_signed_in_ui(false)
	_account_label.text = "Resuming session..."
	# A refresh token stored by an earlier run signs the player back in without a login.
	var resumed = await _cloud.auth.resume_session()
	if resumed.success:
		_on_logged_in(resumed.user)
		if resumed.payload.get("offline", false):
			_account_label.text += " (offline: saves upload when the server is back)"
	else:
		_on_signed_out()


func _on_logged_in(user: Dictionary) -> void:
	_account_label.text = "Signed in as %s" % _display_name(user)
	if not _signed_in:
		_set_signed_in_ui(true)
		# Saves made offline queue on disk and upload in the background once reachable.
		_cloud.saves.enable_auto_sync(true)
		_show_screen("saves")


func _on_signed_out() -> void:
	_set_signed_in_ui(false)
	_account_label.text = "Not signed in"
	_show_login()


func _on_session_expired() -> void:
	_on_signed_out()
	_account_label.text = "Session expired: sign in again"


func _on_logout_pressed() -> void:
	_logout_button.disabled = true
	var result = await _cloud.auth.logout()
	if result.success:
		_on_signed_out()
	else:
		_logout_button.disabled = false
		_account_label.text = "Sign-out failed: %s" % result.error.message


func _on_sync_status_changed(status: String) -> void:
	_sync_label.text = "Auto-sync: %s" % status


func _set_signed_in_ui(signed_in: bool) -> void:
	_signed_in = signed_in
	_nav.visible = signed_in
	_logout_button.visible = signed_in
	_logout_button.disabled = false


func _show_login() -> void:
	if _current_screen == "login":
		return
	_current_screen = "login"
	var login = _replace_screen(LoginScreen)
	login.signed_in.connect(_on_logged_in)


func _show_screen(screen_name: String) -> void:
	if screen_name == _current_screen:
		return
	_current_screen = screen_name
	_replace_screen(SCREENS[screen_name])


func _replace_screen(scene: PackedScene) -> Node:
	for child in _screen_holder.get_children():
		child.queue_free()
	var screen := scene.instantiate()
	_screen_holder.add_child(screen)
	return screen


func _display_name(user: Dictionary) -> String:
	var username := str(user.get("username", ""))
	if username.is_empty():
		username = "guest"
	var email := str(user.get("email", ""))
	return username if email.is_empty() else "%s <%s>" % [username, email]
