extends CenterContainer
## Login screen: email sign-in and registration, password reset, guest (device) sign-in and
## OAuth through the system browser. Every call is `await`ed and yields an AeThexResult.

## Emitted with the user Dictionary after any successful sign-in.
signal signed_in(user: Dictionary)

# By name, not as the global `AeThexCloud`: on a project's first open the Godot 4.3 editor parses
# scripts before the extension has registered the singleton ("Identifier not found").
var _cloud = Engine.get_singleton("AeThexCloud")

@onready var _email_edit: LineEdit = %EmailEdit
@onready var _password_edit: LineEdit = %PasswordEdit
@onready var _username_edit: LineEdit = %UsernameEdit
@onready var _status_label: Label = %StatusLabel
@onready var _buttons: Array = [
	%LoginButton,
	%RegisterButton,
	%ResetButton,
	%DeviceButton,
	%GoogleButton,
	%GithubButton,
	%DiscordButton,
]


func _ready() -> void:
	%LoginButton.pressed.connect(_on_login_pressed)
	%RegisterButton.pressed.connect(_on_register_pressed)
	%ResetButton.pressed.connect(_on_reset_pressed)
	%DeviceButton.pressed.connect(_on_device_pressed)
	%GoogleButton.pressed.connect(_on_oauth_pressed.bind("google"))
	%GithubButton.pressed.connect(_on_oauth_pressed.bind("github"))
	%DiscordButton.pressed.connect(_on_oauth_pressed.bind("discord"))
	_password_edit.text_submitted.connect(func(_text: String) -> void: _on_login_pressed())


func _on_login_pressed() -> void:
	_sign_in(_cloud.auth.login_email(_email(), _password_edit.text), "Signing in...")


func _on_register_pressed() -> void:
	var username := _username_edit.text.strip_edges()
	if username.is_empty():
		_status_label.text = "Pick a username to create an account."
		return
	var pending: Signal = _cloud.auth.register(_email(), _password_edit.text, username)
	_sign_in(pending, "Creating your account...")


func _on_device_pressed() -> void:
	# No device id given: the SDK generates one once and keeps it under user://.
	_sign_in(_cloud.auth.login_device(), "Signing in as a guest...")


func _on_oauth_pressed(provider: String) -> void:
	_sign_in(_cloud.auth.login_oauth(provider), "Finish signing in in your browser...")


func _on_reset_pressed() -> void:
	if _email().is_empty():
		_status_label.text = "Enter your email first."
		return
	_set_busy(true, "Requesting a reset email...")
	var result = await _cloud.auth.request_password_reset(_email())
	_set_busy(false, "")
	if result.success:
		_status_label.text = "If this address has an account, a reset email is on its way."
	else:
		_show_error(result.error)


## Awaits a sign-in call started by the caller and reports its outcome.
func _sign_in(pending: Signal, busy_text: String) -> void:
	_set_busy(true, busy_text)
	var result = await pending
	_set_busy(false, "")
	if result.success:
		_password_edit.text = ""
		signed_in.emit(result.user)
	else:
		_show_error(result.error)


func _set_busy(busy: bool, text: String) -> void:
	for button in _buttons:
		button.disabled = busy
	_status_label.text = text


func _show_error(error: Dictionary) -> void:
	var messages := {
		"invalid_credentials": "Wrong email or password.",
		"conflict": "This email or username is already taken.",
		"rate_limited": "Too many attempts: wait a moment and try again.",
		"network": "Cannot reach the server. Is it running, and is the URL right?",
	}
	_status_label.text = messages.get(error.code, "%s (%s)" % [error.message, error.code])


func _email() -> String:
	return _email_edit.text.strip_edges()
