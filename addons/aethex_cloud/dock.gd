@tool
extends VBoxContainer
## The AeThex Cloud editor dock.
##
## Edits the server settings (stored in Project Settings under aethex_cloud/) and signs in a
## developer account through AeThexCloud.auth. The editor keeps its session apart from the game's
## (user://aethex_cloud_editor), so signing in here never replaces a player session.

const SINGLETON := "AeThexCloud"
const API_URL_SETTING := "aethex_cloud/api_url"
const CLIENT_KEY_SETTING := "aethex_cloud/client_key"

var _url_edit := LineEdit.new()
var _key_edit := LineEdit.new()
var _apply_button := Button.new()
var _check_button := Button.new()
var _health_request := HTTPRequest.new()
var _email_edit := LineEdit.new()
var _password_edit := LineEdit.new()
var _login_button := Button.new()
var _logout_button := Button.new()
var _account_label := Label.new()
var _status_label := Label.new()


func _ready() -> void:
	_build_ui()
	_load_settings()
	var cloud = _cloud()
	if cloud == null:
		_show_status(
			"AeThex Cloud library not found: run scripts/build-addon, then restart the editor."
		)
		_login_button.disabled = true
		_logout_button.disabled = true
		return
	cloud.auth.logged_in.connect(_on_logged_in)
	cloud.auth.logged_out.connect(_on_logged_out)
	cloud.auth.session_expired.connect(_on_session_expired)
	_show_account(cloud.auth.get_current_user())
	# A developer who signed in before stays signed in across editor restarts.
	var resumed = await cloud.auth.resume_session()
	if resumed.success:
		_show_account(resumed.user)


func _build_ui() -> void:
	add_child(_heading("Server"))
	_url_edit.placeholder_text = "http://127.0.0.1:8080"
	add_child(_labeled("URL", _url_edit))
	_key_edit.placeholder_text = "client key"
	add_child(_labeled("Client key", _key_edit))
	var server_buttons := HBoxContainer.new()
	_apply_button.text = "Save settings"
	_apply_button.pressed.connect(_on_apply_pressed)
	server_buttons.add_child(_apply_button)
	_check_button.text = "Check server"
	_check_button.pressed.connect(_on_check_pressed)
	server_buttons.add_child(_check_button)
	add_child(server_buttons)
	_health_request.timeout = 5.0
	_health_request.request_completed.connect(_on_health_completed)
	add_child(_health_request)

	add_child(HSeparator.new())
	add_child(_heading("Developer account"))
	_account_label.autowrap_mode = TextServer.AUTOWRAP_WORD_SMART
	add_child(_account_label)
	_email_edit.placeholder_text = "email"
	add_child(_email_edit)
	_password_edit.placeholder_text = "password"
	_password_edit.secret = true
	_password_edit.text_submitted.connect(func(_text: String) -> void: _on_login_pressed())
	add_child(_password_edit)
	var buttons := HBoxContainer.new()
	_login_button.text = "Sign in"
	_login_button.pressed.connect(_on_login_pressed)
	buttons.add_child(_login_button)
	_logout_button.text = "Sign out"
	_logout_button.pressed.connect(_on_logout_pressed)
	buttons.add_child(_logout_button)
	add_child(buttons)

	add_child(HSeparator.new())
	_status_label.autowrap_mode = TextServer.AUTOWRAP_WORD_SMART
	_status_label.modulate = Color(1, 1, 1, 0.7)
	add_child(_status_label)


func _heading(text: String) -> Label:
	var label := Label.new()
	label.text = text
	label.add_theme_font_size_override("font_size", 15)
	return label


func _labeled(text: String, field: Control) -> Control:
	var row := HBoxContainer.new()
	var label := Label.new()
	label.text = text
	label.custom_minimum_size.x = 80
	row.add_child(label)
	field.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	row.add_child(field)
	return row


func _load_settings() -> void:
	_url_edit.text = str(ProjectSettings.get_setting(API_URL_SETTING, ""))
	_key_edit.text = str(ProjectSettings.get_setting(CLIENT_KEY_SETTING, ""))


func _cloud() -> Object:
	if Engine.has_singleton(SINGLETON):
		return Engine.get_singleton(SINGLETON)
	return null


func _on_apply_pressed() -> void:
	ProjectSettings.set_setting(API_URL_SETTING, _url_edit.text.strip_edges())
	ProjectSettings.set_setting(CLIENT_KEY_SETTING, _key_edit.text.strip_edges())
	var error := ProjectSettings.save()
	if error != OK:
		_show_status("Could not save project.godot: %s" % error_string(error))
		return
	var cloud = _cloud()
	if cloud != null:
		cloud.reconfigure()
	_show_status("Settings saved.")


func _on_check_pressed() -> void:
	var url := _url_edit.text.strip_edges().trim_suffix("/") + "/healthz"
	_health_request.cancel_request()
	var error := _health_request.request(url)
	if error != OK:
		_show_status("Cannot request %s: %s" % [url, error_string(error)])
		return
	_check_button.disabled = true
	_show_status("Checking %s..." % url)


func _on_health_completed(
	result: int, code: int, _headers: PackedStringArray, _body: PackedByteArray
) -> void:
	_check_button.disabled = false
	if result != HTTPRequest.RESULT_SUCCESS:
		_show_status("Server unreachable (HTTPRequest result %d)." % result)
	elif code == 200:
		_show_status("Server reachable.")
	else:
		_show_status("Server answered HTTP %d." % code)


func _on_login_pressed() -> void:
	var cloud = _cloud()
	if cloud == null:
		return
	_login_button.disabled = true
	_show_status("Signing in...")
	var result = await cloud.auth.login_email(_email_edit.text.strip_edges(), _password_edit.text)
	_login_button.disabled = false
	if result.success:
		_password_edit.text = ""
		_show_status("")
		_show_account(result.user)
	else:
		_show_status("Sign-in failed: %s (%s)" % [result.error.message, result.error.code])


func _on_logout_pressed() -> void:
	var cloud = _cloud()
	if cloud == null:
		return
	var result = await cloud.auth.logout()
	if not result.success:
		_show_status("Sign-out failed: %s" % result.error.message)


func _on_logged_in(user: Dictionary) -> void:
	_show_account(user)


func _on_logged_out() -> void:
	_show_account(null)


func _on_session_expired() -> void:
	_show_account(null)
	_show_status("The session expired; sign in again.")


func _show_account(user: Variant) -> void:
	if user is Dictionary and not user.is_empty():
		var email: String = str(user.get("email", ""))
		var username: String = str(user.get("username", ""))
		var suffix := "" if email.is_empty() else " <%s>" % email
		_account_label.text = "Signed in as %s%s" % [username, suffix]
		_logout_button.disabled = false
	else:
		_account_label.text = "Not signed in."
		_logout_button.disabled = true


func _show_status(text: String) -> void:
	_status_label.text = text
